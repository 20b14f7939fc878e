"""Trainer throughput against a bare PyTorch loop on the same model, batches and device.

The bare loop gets its batches already encoded and does forward, loss, backward, step:
no augmentation, no metrics, no non-finite checks, no lr schedule. The trainer does all of
those. Both run in this process, interleaved epoch by epoch, so machine noise hits both;
the figure is the ratio of their samples/s (median over rounds). Target: >= 0.90.

    python benchmarks/throughput.py --profile tiny --rounds 5
    python benchmarks/throughput.py --profile default --device cuda --compile both
    python benchmarks/throughput.py --profile default --device cuda --compile on \
        --compile-mode reduce-overhead --batch-size 64 256

On CUDA a row also has the model FLOP utilisation (`mfu`: model FLOPs per sample x
samples/s over the dense bf16 peak) and the peak memory the row reserved (both loops).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F

from trainer.config import COMPILE_MODES, resolve
from trainer.data import IGNORE, build_data, epoch_batches, targets_of, with_markers
from trainer.inject import Injector
from trainer.loop import Trainer, compiled_forward, pick_device
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


def bare_epoch(model, optimizer, batches, device, autocast, forward, graphs=False) -> float:
    """Samples/s of a plain loop: forward, loss, backward, step."""
    _sync(device)
    start = time.perf_counter()
    samples = 0
    for tasks, tokens, targets in batches:
        if graphs:
            torch.compiler.cudagraph_mark_step_begin()
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


def measure(profile: str, device_name: str, rounds: int, compile_: bool,
            compile_mode: str = "default", batch_size: int | None = None) -> dict:
    device = pick_device(device_name)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    values = {"compile": compile_, "epochs": rounds + 1,
              "compile_mode": compile_mode if compile_ else "default"}
    if batch_size is not None:
        values["batch_size"] = batch_size
    config = resolve(profile, {}, values)
    data = build_data(config)
    trainer = Trainer(config, data, device, Injector())
    bare_model = GridTransformer(trainer.model_config).to(device)
    bare_model.load_state_dict(trainer.model.state_dict())
    cuda = device.type == "cuda"
    bare_opt = torch.optim.AdamW(bare_model.parameters(), lr=config.learning_rate,
                                 weight_decay=config.weight_decay, fused=cuda)
    forward, graphs = compiled_forward(bare_model, config, device)  # as the trainer's
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda)
    batches = _encoded_batches(data, config, 0, device)
    # Warm up both (allocator, compile), then interleave.
    start = time.perf_counter()
    bare_epoch(bare_model, bare_opt, batches, device, autocast, forward, graphs)
    trainer_epoch(trainer)
    warmup_s = time.perf_counter() - start
    ratios, bare_sps, trainer_sps = [], [], []
    for _ in range(rounds):
        b = bare_epoch(bare_model, bare_opt, batches, device, autocast, forward, graphs)
        t = trainer_epoch(trainer)
        bare_sps.append(b)
        trainer_sps.append(t)
        ratios.append(t / b)
    result = {"profile": profile, "device": str(device), "compile": compile_ and cuda,
              "compile_mode": config.compile_mode if compile_ and cuda else None,
              "batch_size": config.batch_size, "warmup_s": round(warmup_s, 1),
              "parameters": count_parameters(trainer.model), "train_pairs": len(data.train),
              "bare_samples_per_s": statistics.median(bare_sps),
              "trainer_samples_per_s": statistics.median(trainer_sps),
              "ratio": statistics.median(ratios)}
    if cuda:
        sizes = [(len(b), b.side) for b in data.train.buckets]
        per_sample = sum(n * flops_per_sample(trainer.model, s) for n, s in sizes) / sum(
            n for n, _ in sizes)
        result["flops_per_sample"] = per_sample
        result["mfu"] = result["trainer_samples_per_s"] * per_sample / PEAK_FLOPS["cuda"]
        result["bare_mfu"] = result["bare_samples_per_s"] * per_sample / PEAK_FLOPS["cuda"]
        result["max_reserved_gib"] = torch.cuda.max_memory_reserved() / 2**30
        result["gpu"] = torch.cuda.get_device_name()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="tiny", choices=("tiny", "default", "large"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--compile", default="off", choices=("off", "on", "both"))
    parser.add_argument("--compile-mode", default="default", choices=COMPILE_MODES,
                        help="torch.compile's mode for the compiled rows (CUDA only)")
    parser.add_argument("--batch-size", type=int, nargs="+", default=[None], metavar="N",
                        help="pairs per batch, one row each (default: the profile's)")
    args = parser.parse_args()
    modes = {"off": [False], "on": [True], "both": [False, True]}[args.compile]
    for batch_size in args.batch_size:
        for mode in modes:
            row = measure(args.profile, args.device, args.rounds, mode, args.compile_mode,
                          batch_size)
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
