"""The Trainer: one epoch of training, evaluation, resumable state, mid-run changes.

Read top to bottom in the order the data flows: setup, a training step, an epoch,
evaluation, state. It knows nothing of divergence policies: a non-finite loss or
gradient stops the epoch with `Diverged` before the optimizer applies it, and a per-step
callback may stop it the same way; what to do next is the caller's business.
"""

from __future__ import annotations

import math
import os
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from trainer import augment
from trainer.config import TrainConfig
from trainer.data import (
    IGNORE,
    N_CLASSES,
    ArcData,
    Dataset,
    epoch_batches,
    eval_batches,
    steps_per_epoch,
    targets_of,
    with_markers,
)
from trainer.inject import Injector
from trainer.model import GridTransformer, ModelConfig
from trainer.schedule import apply_lr, lr_at

STATE_VERSION = 1
# Keys a running trainer can change; the schedule honours them from the next step on.
MUTABLE_KEYS = frozenset({"learning_rate", "warmup_epochs", "schedule", "min_lr_ratio",
                          "label_smoothing", "use_augmentation", "grad_clip", "weight_decay",
                          "skip_batches", "max_loss_increase", "max_recoveries", "epochs"})


@dataclass(frozen=True)
class StepInfo:
    """What a per-step callback sees after a step."""

    step: int           # logical optimizer step (0-based) just applied
    compute_step: int   # optimizer steps of compute so far, never goes back
    loss: float
    grad_norm: float
    lr: float


class Diverged(Exception):
    """A step that must not be applied (non-finite) or that a step callback stopped."""

    def __init__(self, reason: str, step: int, detail: Any = None, loss: float = float("nan"),
                 grad_norm: float = float("nan")) -> None:
        super().__init__(f"{reason} at step {step}")
        self.reason, self.step, self.detail = reason, step, detail
        self.loss, self.grad_norm = loss, grad_norm


StepCallback = Callable[[StepInfo], Any]


def pick_device(name: str) -> torch.device:
    """`auto` is CUDA when available, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


class Trainer:
    """Trains a GridTransformer on ArcData per a TrainConfig."""

    def __init__(self, config: TrainConfig, data: ArcData, device: torch.device | str = "cpu",
                 injector: Injector | None = None) -> None:
        self.config = config
        self.data = data
        self.device = torch.device(device)
        self.injector = injector if injector is not None else Injector.from_env()
        torch.manual_seed(config.seed)
        self.model_config = ModelConfig.of_size(config.model, len(data.task_ids))
        self.model = GridTransformer(self.model_config).to(self.device)
        cuda = self.device.type == "cuda"
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=config.learning_rate,
                                           weight_decay=config.weight_decay, fused=cuda)
        self._optimizer_defaults = {"betas": self.optimizer.defaults["betas"],
                                    "eps": self.optimizer.defaults["eps"]}
        self.forward = torch.compile(self.model) if (config.compile and cuda) else self.model
        self.autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda)
        self.steps_per_epoch = steps_per_epoch(data.train, config.batch_size)
        self.chance_loss = math.log(N_CLASSES)  # cross-entropy of a uniform prediction
        self.step = 0           # logical optimizer steps; lr_at reads this
        self.compute_step = 0   # steps of compute, never goes back (fault injection)
        self.epoch = 0          # logical epochs done
        self.global_epoch = 0   # epochs of compute, never goes back
        self.lr_trace: list[tuple[int, float]] = []  # (step, applied lr): the schedule audit
        self.step_losses: list[float] = []           # this timeline's per-step losses
        self.step_grad_norms: list[float] = []

    # -- changes -------------------------------------------------------------------------

    def apply_changes(self, changes: Mapping[str, Any]) -> TrainConfig:
        """Change hyperparameters mid-run; the schedule honours them from the next step."""
        unknown = set(changes) - MUTABLE_KEYS
        if unknown:
            raise ValueError(f"cannot change {sorted(unknown)} mid-run; changeable: "
                             f"{sorted(MUTABLE_KEYS)}")
        self.config = self.config.replace(**changes)
        for group in self.optimizer.param_groups:
            group["weight_decay"] = self.config.weight_decay
        apply_lr(self.optimizer, lr_at(self.step, self.config, self.steps_per_epoch))
        return self.config

    # -- one batch -----------------------------------------------------------------------

    def _batch(self, dataset: Dataset, bucket: int, index: torch.Tensor, augment_seed: int | None
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(tasks, input tokens, targets) on the device, augmented when a seed is given."""
        b = dataset.buckets[bucket]
        dev = self.device
        inputs = b.inputs[index].to(dev, non_blocking=True).long()
        outputs = b.outputs[index].to(dev, non_blocking=True).long()
        in_shapes = b.input_shapes[index].to(dev, non_blocking=True)
        out_shapes = b.output_shapes[index].to(dev, non_blocking=True)
        if augment_seed is not None:
            t = augment.sample_transforms(len(index), augment_seed, dev)
            inputs, in_shapes = augment.apply(inputs, in_shapes, t)
            outputs, out_shapes = augment.apply(outputs, out_shapes, t)
        tasks = b.tasks[index].to(dev, non_blocking=True)
        return tasks, with_markers(inputs, in_shapes), targets_of(outputs, out_shapes)

    def _loss(self, tasks: torch.Tensor, tokens: torch.Tensor, targets: torch.Tensor,
              smoothing: float) -> tuple[torch.Tensor, torch.Tensor]:
        with self.autocast:
            logits = self.forward(tasks, tokens)
        loss = F.cross_entropy(logits.float().flatten(0, 2), targets.flatten(),
                               ignore_index=IGNORE, label_smoothing=smoothing)
        return loss, logits

    # -- training ------------------------------------------------------------------------

    def train_step(self, bucket: int, index: torch.Tensor) -> StepInfo:
        """One optimizer step; raises Diverged before applying a non-finite update."""
        cfg = self.config
        lr = lr_at(self.step, cfg, self.steps_per_epoch)
        apply_lr(self.optimizer, lr)
        seed = cfg.seed * 1_000_003 + self.step if cfg.use_augmentation else None
        tasks, tokens, targets = self._batch(self.data.train, bucket, index, seed)
        self.model.train()
        loss, _ = self._loss(tasks, tokens, targets, cfg.label_smoothing)
        if self.injector:
            loss = self.injector.on_loss(self.compute_step, loss)
        loss_value = loss.item()
        if not np.isfinite(loss_value):
            self.optimizer.zero_grad(set_to_none=True)
            self.compute_step += 1  # the refused step was compute spent all the same
            raise Diverged("nonfinite_loss", self.step, loss=loss_value)
        loss.backward()
        if self.injector:
            self.injector.on_grad(self.compute_step, self.model)
        max_norm = cfg.grad_clip if cfg.grad_clip > 0 else float("inf")
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm).item()
        if not np.isfinite(grad_norm):
            self.optimizer.zero_grad(set_to_none=True)
            self.compute_step += 1
            raise Diverged("nonfinite_grad", self.step, loss=loss_value, grad_norm=grad_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.lr_trace.append((self.step, lr))
        self.step_losses.append(loss_value)
        self.step_grad_norms.append(grad_norm)
        info = StepInfo(self.step, self.compute_step, loss_value, grad_norm, lr)
        self.step += 1
        self.compute_step += 1
        return info

    def train_epoch(self, on_step: StepCallback | None = None) -> dict[str, float]:
        """Train the rest of the current logical epoch; returns its training metrics.

        `on_step(info)` returning something truthy stops the epoch with Diverged carrying it.
        """
        cfg = self.config
        start = time.perf_counter()
        batches = epoch_batches(self.data.train, cfg.batch_size, cfg.seed, self.epoch)
        first = self.step - self.epoch * self.steps_per_epoch  # > 0 only mid-epoch
        losses, norms, samples = [], [], 0
        skip = set(cfg.skip_batches)
        for bucket, index in batches[first:]:
            if self.injector:
                self.injector.on_step_start(self.compute_step)
            if self.step in skip:  # recovery chose to skip this batch (a loss spike)
                self.step += 1
                self.compute_step += 1
                continue
            info = self.train_step(bucket, index)
            losses.append(info.loss)
            norms.append(info.grad_norm)
            samples += len(index)
            if on_step is not None:
                verdict = on_step(info)
                if verdict:
                    raise Diverged(getattr(verdict, "reason", "stopped"), info.step, verdict,
                                   info.loss, info.grad_norm)
        self.epoch += 1
        self.global_epoch += 1
        elapsed = time.perf_counter() - start
        return {"train_loss": float(np.mean(losses)) if losses else float("nan"),
                "train_loss_max": float(np.max(losses)) if losses else float("nan"),
                "grad_norm": float(np.mean(norms)) if norms else float("nan"),
                "grad_norm_max": float(np.max(norms)) if norms else float("nan"),
                "lr": self.lr_trace[-1][1] if self.lr_trace else 0.0,
                "samples_per_s": samples / elapsed if elapsed > 0 else 0.0,
                "train_time_s": elapsed}

    # -- evaluation ----------------------------------------------------------------------

    @torch.no_grad()
    def evaluate(self, split: str = "val") -> dict[str, float]:
        """Cross-entropy without smoothing or augmentation, cell accuracy, exact match, and
        the copy-the-input baseline beside them (comparable across recoveries)."""
        dataset = {"val": self.data.val, "test": self.data.test, "train": self.data.train}[split]
        self.model.eval()
        loss_sum = scored_cells = cells = correct = copy_correct = exact = copy_exact = 0.0
        for bucket, index in eval_batches(dataset, 256):
            tasks, tokens, targets = self._batch(dataset, bucket, index, None)
            loss, logits = self._loss(tasks, tokens, targets, 0.0)
            scored = targets != IGNORE
            n_scored = scored.sum().item()
            loss_sum += loss.item() * n_scored
            scored_cells += n_scored
            pred = logits.argmax(-1)
            grid = scored & (targets < 10)  # colour cells of the expected output
            cells += grid.sum().item()
            correct += ((pred == targets) & grid).sum().item()
            exact += ((pred == targets) | ~scored).flatten(1).all(1).sum().item()
            # Copying the input (with its own END markers) as the prediction.
            copy_correct += ((tokens == targets) & grid).sum().item()
            copy_exact += ((tokens == targets) | ~scored).flatten(1).all(1).sum().item()
        n = max(len(dataset), 1)
        return {f"{split}_loss": loss_sum / max(scored_cells, 1),
                f"{split}_cell_acc": correct / max(cells, 1),
                f"{split}_exact": exact / n,
                f"{split}_copy_cell_acc": copy_correct / max(cells, 1),
                f"{split}_copy_exact": copy_exact / n}

    # -- state ---------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Everything a resume needs, under named keys (safe for weights_only loading)."""
        return {
            "trainer_version": STATE_VERSION,
            "model_config": self.model_config.to_dict(),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "config": self.config.to_dict(),
            "step": self.step, "compute_step": self.compute_step,
            "epoch": self.epoch, "global_epoch": self.global_epoch,
            "lr_trace": [list(p) for p in self.lr_trace],
            "step_losses": list(self.step_losses),
            "step_grad_norms": list(self.step_grad_norms),
            "rng_torch": torch.get_rng_state(),
            "rng_numpy": _numpy_state(),
            "rng_python": list(random.getstate()[1]),
        }

    def load_state_dict(self, state: Mapping[str, Any], *, keep_config: bool = False,
                        keep_counters: bool = False) -> None:
        """Restore a state; with `keep_config` the configuration in force wins (rollback),
        with `keep_counters` the never-going-back counters stay as they are."""
        if state.get("trainer_version") != STATE_VERSION:
            raise ValueError(f"trainer state version {state.get('trainer_version')} is not "
                             f"{STATE_VERSION}")
        if state["model_config"] != self.model_config.to_dict():
            raise ValueError(f"checkpoint model {state['model_config']} does not match "
                             f"{self.model_config.to_dict()}")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if not keep_config:
            self.config = TrainConfig(**state["config"])
        # Loading optimizer state brings back its old hyperparameters: the config wins.
        for group in self.optimizer.param_groups:
            group.update(self._optimizer_defaults, weight_decay=self.config.weight_decay)
        self.step, self.epoch = int(state["step"]), int(state["epoch"])
        if not keep_counters:
            self.compute_step = int(state["compute_step"])
            self.global_epoch = int(state["global_epoch"])
        self.lr_trace = [(int(s), float(lr)) for s, lr in state["lr_trace"]]
        self.step_losses = list(state["step_losses"])
        self.step_grad_norms = list(state["step_grad_norms"])
        torch.set_rng_state(state["rng_torch"])
        _set_numpy_state(state["rng_numpy"])
        random.setstate((3, tuple(state["rng_python"]), None))
        apply_lr(self.optimizer, lr_at(self.step, self.config, self.steps_per_epoch))


def _numpy_state() -> dict[str, Any]:
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    return {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
            "has_gauss": int(has_gauss), "gauss": float(gauss), "name": str(name)}


def _set_numpy_state(s: Mapping[str, Any]) -> None:
    np.random.set_state((s["name"], s["keys"].numpy().astype(np.uint32), s["pos"],
                         s["has_gauss"], s["gauss"]))


def set_threads(n: int | None) -> None:
    """Cap torch's CPU threads (parallel workers share the cores)."""
    if n:
        torch.set_num_threads(n)
        os.environ.setdefault("OMP_NUM_THREADS", str(n))
