"""The Trainer: one epoch of training, evaluation, resumable state, mid-run changes.

Read top to bottom in the order the data flows: setup, a training step, an epoch,
evaluation, state. It knows nothing of divergence policies. It offers what a supervisor
needs: `hparams`, `train_epoch(on_step)`, `evaluate()`, `state_dict()`,
`load_state_dict()` and `apply_changes()`. A non-finite loss or gradient is never applied
(the fused optimizer skips the update on the device); every step's values go to
`on_step(step, loss, grad_norm)`, which may raise to stop the epoch. Without a callback a
non-finite step stops the epoch with `Diverged`.

Step values are read from the device after the optimizer step (every step on the CPU,
where reading is free; in groups of 32 on a GPU), so `on_step` sees a step the optimizer
has already run. A non-finite step was skipped on the device all the same (the fused
optimizer's `found_inf`), and a caller that stops on another verdict rolls back to a
checkpoint anyway.
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

from trainer import augment, scoring
from trainer.config import TrainConfig
from trainer.data import (
    IGNORE,
    N_CLASSES,
    ArcData,
    Dataset,
    epoch_batches,
    eval_batches,
    marginal_losses,
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
                          "skip_batches", "epochs"})
# torch.compile modes that capture and replay CUDA graphs.
CUDA_GRAPH_MODES = frozenset({"reduce-overhead", "max-autotune"})
# What `hparams` shows a supervisor: the keys its recovery may change.
HPARAM_KEYS = ("learning_rate", "warmup_epochs", "label_smoothing", "use_augmentation",
               "grad_clip", "weight_decay", "skip_batches")


@dataclass(frozen=True)
class StepInfo:
    """What a per-step callback sees after a step."""

    step: int           # logical optimizer step (0-based) just applied
    compute_step: int   # optimizer steps of compute so far, never goes back
    loss: float
    grad_norm: float
    lr: float


class Diverged(Exception):
    """A non-finite step, met with no step callback to judge it (it was not applied)."""

    def __init__(self, reason: str, step: int, detail: Any = None, loss: float = float("nan"),
                 grad_norm: float = float("nan")) -> None:
        super().__init__(f"{reason} at step {step}")
        self.reason, self.step, self.detail = reason, step, detail
        self.loss, self.grad_norm = loss, grad_norm


StepCallback = Callable[[int, float, float], Any]
"""`on_step(step, loss, grad_norm)`; raising stops the epoch (the exception goes through)."""


def pick_device(name: str) -> torch.device:
    """`auto` is CUDA when available, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def default_profile(device: str) -> str:
    """The profile a device gets when none is given: `default` on CUDA, `tiny` on a CPU."""
    cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    return "default" if cuda else "tiny"


def compiled_forward(model: torch.nn.Module, config: TrainConfig, device: torch.device
                     ) -> tuple[Callable[..., torch.Tensor], bool]:
    """The training forward: on CUDA with `compile`, the model through torch.compile in
    `compile_mode` (static shapes: a few buckets and batch sizes, each compiled once), else
    the model itself; and whether it replays CUDA graphs (each step then marks its start)."""
    if not (config.compile and device.type == "cuda"):
        return model, False
    forward = torch.compile(model, dynamic=False, mode=config.compile_mode)
    return forward, config.compile_mode in CUDA_GRAPH_MODES


class Trainer:
    """Trains a GridTransformer on ArcData per a TrainConfig."""

    def __init__(self, config: TrainConfig, data: ArcData, device: torch.device | str = "cpu",
                 injector: Injector | None = None) -> None:
        self.config = config
        self.device = torch.device(device)
        self.data = data.to(self.device)
        self.injector = injector if injector is not None else Injector.from_env(config.seed)
        torch.manual_seed(config.seed)
        self.model_config = ModelConfig.of_size(config.model, len(data.task_ids))
        self.model = GridTransformer(self.model_config).to(self.device)
        cuda = self.device.type == "cuda"
        # Fused: one kernel for the update, and it can skip a non-finite step on the device.
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=config.learning_rate,
                                           weight_decay=config.weight_decay, fused=True)
        self._optimizer_defaults = {"betas": self.optimizer.defaults["betas"],
                                    "eps": self.optimizer.defaults["eps"]}
        self.forward, self._graphs = compiled_forward(self.model, config, self.device)
        # Reading step values syncs the host with the device: free on the CPU, costly on a
        # GPU, where steps are read in groups (a bad step is skipped on the device anyway).
        self.sync_every = 32 if cuda else 1
        self.autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda)
        self.steps_per_epoch = steps_per_epoch(data.train, config.batch_size)
        self.chance_loss = math.log(N_CLASSES)  # cross-entropy of a uniform prediction
        self._marginal = marginal_losses(data)
        self.step = 0           # logical optimizer steps; lr_at reads this
        self.compute_step = 0   # steps of compute, never goes back (fault injection)
        self.epoch = 0          # logical epochs done
        self.global_epoch = 0   # epochs of compute, never goes back
        self.lr_trace: list[tuple[int, float]] = []  # (step, applied lr): the schedule audit

    @property
    def marginal_loss(self) -> float:
        """The validation loss of predicting the class frequencies only (as augmented now)."""
        return self._marginal["val", self.config.use_augmentation]

    @property
    def train_marginal_loss(self) -> float:
        """The same on the training pairs: where a collapsed run's training loss sits."""
        return self._marginal["train", self.config.use_augmentation]

    # -- changes -------------------------------------------------------------------------

    @property
    def hparams(self) -> dict[str, Any]:
        """The hyperparameters a supervisor's recovery may change, as they are now."""
        values = self.config.to_dict()
        return {key: values[key] for key in HPARAM_KEYS}

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

    def _batch(self, dataset: Dataset, bucket: int, index: torch.Tensor,
               transforms: augment.Transforms | None
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(tasks, input tokens, targets) on the device, augmented when transforms are given."""
        b = dataset.buckets[bucket]
        index = index.to(self.device, non_blocking=True)
        inputs, outputs = b.inputs[index].long(), b.outputs[index].long()
        in_shapes, out_shapes = b.input_shapes[index], b.output_shapes[index]
        if transforms is not None:
            inputs, in_shapes = augment.apply(inputs, in_shapes, transforms)
            outputs, out_shapes = augment.apply(outputs, out_shapes, transforms)
        tasks = b.tasks[index]
        return tasks, with_markers(inputs, in_shapes), targets_of(outputs, out_shapes)

    def _loss(self, tasks: torch.Tensor, tokens: torch.Tensor, targets: torch.Tensor,
              smoothing: float, train: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        if train and self._graphs:  # a new step: the last one's graph outputs are done with
            torch.compiler.cudagraph_mark_step_begin()
        with self.autocast:
            logits = (self.forward if train else self.model)(tasks, tokens)
        loss = F.cross_entropy(logits.float().flatten(0, 2), targets.flatten(),
                               ignore_index=IGNORE, label_smoothing=smoothing)
        return loss, logits

    # -- training ------------------------------------------------------------------------

    def train_step(self, bucket: int, index: torch.Tensor,
                   transforms: augment.Transforms | None = None) -> tuple[torch.Tensor, float]:
        """One optimizer step; returns [loss, grad norm] on the device (unread) and the
        learning rate the optimizer applied (read back from it: the schedule audit checks
        what was used, not what lr_at says).

        A non-finite loss or gradient is never applied: the fused AdamW skips the update on
        the device (its `found_inf`, as under a GradScaler), with no host sync here.
        """
        cfg = self.config
        apply_lr(self.optimizer, lr_at(self.step, cfg, self.steps_per_epoch))
        tasks, tokens, targets = self._batch(self.data.train, bucket, index, transforms)
        loss, _ = self._loss(tasks, tokens, targets, cfg.label_smoothing)
        if self.injector:
            loss = self.injector.on_loss(self.compute_step, loss)
        loss.backward()
        if self.injector:
            self.injector.on_grad(self.compute_step, self.model)
        max_norm = cfg.grad_clip if cfg.grad_clip > 0 else float("inf")
        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm)
        stats = torch.stack([loss.detach().float(), norm.float()])
        # torch's AdamW reads `found_inf` with getattr (GradScaler sets it the same way); its
        # type stub does not declare the attribute.
        self.optimizer.found_inf = (  # type: ignore[attr-defined]
            ~torch.isfinite(stats)).any().float()
        applied = float(self.optimizer.param_groups[0]["lr"])
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        self.compute_step += 1
        return stats, applied

    def _read(self, pending: list[tuple[int, int, float, torch.Tensor]],
              on_step: StepCallback | None) -> list[StepInfo]:
        """Read the steps' values (one host sync), record them, hand each to `on_step`."""
        values = torch.stack([stats for *_, stats in pending]).tolist()
        infos = []
        for (step, compute_step, lr, _), (loss, norm) in zip(pending, values):
            finite = math.isfinite(loss) and math.isfinite(norm)
            if not finite and on_step is None:
                reason = "nonfinite_loss" if not math.isfinite(loss) else "nonfinite_grad"
                raise Diverged(reason, step, loss=loss, grad_norm=norm)
            info = StepInfo(step, compute_step, loss, norm, lr)
            if finite:  # a skipped step applied no rate and trained nothing
                self.lr_trace.append((step, lr))
                infos.append(info)
            if on_step is not None:
                on_step(step, loss, norm)
        pending.clear()
        return infos

    def train_epoch(self, on_step: StepCallback | None = None) -> dict[str, float]:
        """Train the rest of the current logical epoch; returns its training metrics.

        Step values are read every `sync_every` steps (every step on the CPU, where reading
        is free) and handed to `on_step(step, loss, grad_norm)`; an exception it raises
        stops the epoch and goes through.
        """
        cfg = self.config
        start = time.perf_counter()
        batches = epoch_batches(self.data.train, cfg.batch_size, cfg.seed, self.epoch)
        batches = batches[self.step - self.epoch * self.steps_per_epoch:]  # mid-epoch resume
        # One host-to-device copy of the epoch's indices instead of one a step.
        flat = torch.cat([index for _, index in batches]).to(self.device) if batches else None
        sizes = [len(index) for _, index in batches]
        indices = flat.split(sizes) if flat is not None else ()
        # Augmentation is a pure function of (seed, step): a resume sees the same.
        seeds = [cfg.seed * 1_000_003 + self.step + i for i in range(len(batches))]
        transforms = augment.sample_many(sizes, seeds, self.device) if cfg.use_augmentation \
            else [None] * len(batches)
        done: list[StepInfo] = []
        pending: list[tuple[int, int, float, torch.Tensor]] = []
        samples = 0
        skip = set(cfg.skip_batches)
        self.model.train()
        for (bucket, _), index, t in zip(batches, indices, transforms):
            if self.injector:
                self.injector.on_step_start(self.compute_step)
            if self.step in skip:  # recovery chose to skip this batch (a loss spike)
                self.step += 1
                self.compute_step += 1
                continue
            step, compute_step = self.step, self.compute_step
            stats, lr = self.train_step(bucket, index, t)
            pending.append((step, compute_step, lr, stats))
            samples += len(index)
            if len(pending) >= self.sync_every:
                done += self._read(pending, on_step)
        if pending:
            done += self._read(pending, on_step)
        self.epoch += 1
        self.global_epoch += 1
        elapsed = time.perf_counter() - start
        losses = [i.loss for i in done]
        norms = [i.grad_norm for i in done]
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
            loss, logits = self._loss(tasks, tokens, targets, 0.0, train=False)
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

    @torch.no_grad()
    def arc_scores(self, split: str = "test", colour_perms: int = 2) -> dict[str, float]:
        """ARC's own metric on `split`: pass@2 and pass@1 voted over augmented views, with
        the copy-the-input baseline beside them (`trainer.scoring`)."""
        dataset = {"val": self.data.val, "test": self.data.test, "train": self.data.train}[split]
        self.model.eval()

        def logits(tasks: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
            with self.autocast:
                return self.model(tasks, tokens).float()

        return scoring.score(logits, dataset, colour_perms, seed=self.config.seed).to_dict(split)

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
            "rng_torch": torch.get_rng_state(),
            "rng_numpy": _numpy_state(),
            "rng_python": list(random.getstate()[1]),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a state. The configuration in force wins over the state's (a rollback
        keeps what recovery changed; a resume builds the trainer with the effective
        configuration), and the counters of compute never go back (`compute_step`, which
        fault injection counts, and `global_epoch`)."""
        if state.get("trainer_version") != STATE_VERSION:
            raise ValueError(f"trainer state version {state.get('trainer_version')} is not "
                             f"{STATE_VERSION}")
        if state["model_config"] != self.model_config.to_dict():
            raise ValueError(f"checkpoint model {state['model_config']} does not match "
                             f"{self.model_config.to_dict()}")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        # Loading optimizer state brings back its old hyperparameters: the config wins.
        for group in self.optimizer.param_groups:
            group.update(self._optimizer_defaults, weight_decay=self.config.weight_decay)
        self.step, self.epoch = int(state["step"]), int(state["epoch"])
        self.compute_step = max(self.compute_step, int(state["compute_step"]))
        self.global_epoch = max(self.global_epoch, int(state["global_epoch"]))
        self.lr_trace = [(int(s), float(lr)) for s, lr in state["lr_trace"]]
        torch.set_rng_state(state["rng_torch"].cpu())
        _set_numpy_state(state["rng_numpy"])
        random.setstate((3, tuple(state["rng_python"]), None))
        apply_lr(self.optimizer, lr_at(self.step, self.config, self.steps_per_epoch))


def _numpy_state() -> dict[str, Any]:
    state = np.random.get_state()  # the legacy tuple (numpy's default)
    assert isinstance(state, tuple)
    name, keys, pos, has_gauss, gauss = state
    return {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
            "has_gauss": int(has_gauss), "gauss": float(gauss), "name": str(name)}


def _set_numpy_state(s: Mapping[str, Any]) -> None:
    np.random.set_state((s["name"], s["keys"].cpu().numpy().astype(np.uint32), s["pos"],
                         s["has_gauss"], s["gauss"]))


def set_threads(n: int | None) -> None:
    """Cap torch's CPU threads (parallel workers share the cores)."""
    if n:
        torch.set_num_threads(n)
        os.environ.setdefault("OMP_NUM_THREADS", str(n))
