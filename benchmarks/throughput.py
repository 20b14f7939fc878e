"""Trainer throughput against a bare PyTorch loop on the same model, batches and device.

The bare loop gets its batches already encoded and does forward, loss, backward, step:
no augmentation, no metrics, no non-finite checks, no lr schedule. The trainer does all of
those. Both run in this process, interleaved epoch by epoch, so machine noise hits both;
the figure is the ratio of their samples/s (median over rounds). Target: >= 0.90.

    python benchmarks/throughput.py --profile tiny --rounds 5
    python benchmarks/throughput.py --profile default --device cuda --compile both
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F

from trainer.config import resolve
from trainer.data import IGNORE, build_data, epoch_batches, targets_of, with_markers
from trainer.inject import Injector
from trainer.loop import Trainer, pick_device
from trainer.model import GridTransformer, count_parameters

# Dense bf16 peak of the accelerator, for model FLOP utilisation (H100 SXM, H200: ~989e12).
PEAK_FLOPS = {"cuda": 989e12}


def _encoded_batches(data, config, epoch, device):
    out = []
    for b, index in epoch_batches(data.train, config.batch_size, config.seed, epoch):
        bucket = data.train.buckets[b]
        tokens = with_markers(bucket.inputs[index].long(), bucket.input_shapes[index])
        targets = targets_of(bucket.outputs[index].long(), bucket.output_shapes[index])
        out.append((bucket.tasks[index].to(device), tokens.to(device), targets.to(device)))
    return out


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def bare_epoch(model, optimizer, batches, device, autocast, forward) -> float:
    """Samples/s of a plain loop: forward, loss, backward, step."""
    _sync(device)
    start = time.perf_counter()
    samples = 0
    for tasks, tokens, targets in batches:
        with autocast:
            logits = forward(tasks, tokens)
        loss = F.cross_entropy(logits.float().flatten(0, 2), targets.flatten(),
                               ignore_index=IGNORE)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        samples += len(tasks)
    _sync(device)
    return samples / (time.perf_counter() - start)


def trainer_epoch(trainer: Trainer) -> float:
    """Samples/s of one epoch of the trainer (every pair once)."""
    _sync(trainer.device)
    start = time.perf_counter()
    trainer.train_epoch()
    _sync(trainer.device)
    return len(trainer.data.train) / (time.perf_counter() - start)


def flops_per_sample(model: GridTransformer, side: int) -> float:
    """Training FLOPs of one pair: 6 x (non-embedding parameters) x tokens + attention."""
    cfg = model.cfg
    tokens = 1 + 2 * side * side
    dense = sum(p.numel() for n, p in model.named_parameters() if "blocks" in n or "head" in n)
    attention = 12 * cfg.n_layers * cfg.d_model * tokens * tokens
    return 6 * dense * tokens + attention


def measure(profile: str, device_name: str, rounds: int, compile_: bool) -> dict:
    device = pick_device(device_name)
    config = resolve(profile, {}, {"compile": compile_, "epochs": rounds + 1})
    data = build_data(config)
    trainer = Trainer(config, data, device, Injector())
    bare_model = GridTransformer(trainer.model_config).to(device)
    bare_model.load_state_dict(trainer.model.state_dict())
    cuda = device.type == "cuda"
    bare_opt = torch.optim.AdamW(bare_model.parameters(), lr=config.learning_rate,
                                 weight_decay=config.weight_decay, fused=cuda)
    forward = torch.compile(bare_model, dynamic=False) if (compile_ and cuda) else bare_model
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda)
    batches = _encoded_batches(data, config, 0, device)
    # Warm up both (allocator, compile), then interleave.
    bare_epoch(bare_model, bare_opt, batches, device, autocast, forward)
    trainer_epoch(trainer)
    ratios, bare_sps, trainer_sps = [], [], []
    for _ in range(rounds):
        b = bare_epoch(bare_model, bare_opt, batches, device, autocast, forward)
        t = trainer_epoch(trainer)
        bare_sps.append(b)
        trainer_sps.append(t)
        ratios.append(t / b)
    result = {"profile": profile, "device": str(device), "compile": compile_ and cuda,
              "parameters": count_parameters(trainer.model), "train_pairs": len(data.train),
              "bare_samples_per_s": statistics.median(bare_sps),
              "trainer_samples_per_s": statistics.median(trainer_sps),
              "ratio": statistics.median(ratios)}
    if cuda:
        sizes = [(len(b), b.side) for b in data.train.buckets]
        per_sample = sum(n * flops_per_sample(trainer.model, s) for n, s in sizes) / sum(
            n for n, _ in sizes)
        result["mfu"] = result["trainer_samples_per_s"] * per_sample / PEAK_FLOPS["cuda"]
        result["gpu"] = torch.cuda.get_device_name()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="tiny", choices=("tiny", "default", "large"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--compile", default="off", choices=("off", "on", "both"))
    args = parser.parse_args()
    modes = {"off": [False], "on": [True], "both": [False, True]}[args.compile]
    for mode in modes:
        print(json.dumps(measure(args.profile, args.device, args.rounds, mode)), flush=True)


if __name__ == "__main__":
    main()
