"""How many trials share one GPU: the default of `autotune search --jobs` on CUDA.

Several trials run at once as processes on the one device (each with its share of the
host cores); nothing changes machine-wide GPU settings (no MPS, no MIG). When `--jobs` is
not given the number comes from the free device memory divided by what one trial needs,
capped (`MAX_JOBS`, and never more than the host cores); on a CPU it stays 1.

`pack` is the pure decision; `trial_memory` estimates one trial's device memory from its
configuration; `choose_jobs` puts them together with the device's free memory.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from autotune.recovery.threads import cpus
from trainer.config import TrainConfig
from trainer.data import BUCKETS, N_CLASSES, VOCAB
from trainer.loop import pick_device
from trainer.model import SIZES, ModelConfig

GIB = 1024**3
MAX_JOBS = 8
"""Trials at once on one device at most: a small model is launch-bound, and past a few
processes they mostly queue for the same device."""

ARC_TASKS = 800
"""Tasks of ARC-AGI-1 (training and evaluation): rows of the task embedding."""

# What one trial holds on the device, besides its model's state and activations: the CUDA
# context, cuBLAS / cuDNN workspaces and the caching allocator's slack (about 0.5 GiB of
# context on an H100 with torch 2.x; 1 GiB leaves room for the rest).
CONTEXT_BYTES = 1 * GIB
SAFETY = 1.5
"""Factor on the estimated state and activations: fragmentation across the bucket shapes,
the evaluation batches (256 pairs, no grad), torch.compile's memory pools."""

# Bytes autograd keeps per token and layer, in units of d_model, under bf16 autocast
# (trainer/model.py Block): the fp32 residual inputs of the two RMSNorms (2 x 4), the bf16
# inputs of qkv, proj and the MLP's first linear (3 x 2), q, k, v and the attention output
# (4 x 2); the MLP's GELU input and output (2 x 2 x mlp_ratio) are added per model.
_SAVED_PER_LAYER = 8 + 6 + 8
_SAVED_STEM = 12  # embeddings and the final norm, fp32, per token
_SAVED_PER_LOGIT = 14  # bf16 logits, their fp32 copy, log-softmax and its gradient


@dataclass(frozen=True)
class Packing:
    """How many trials run at once, and why (what the CLI's startup line says)."""

    jobs: int
    reason: str

    def describe(self) -> str:
        return f"{self.jobs} job{'s' if self.jobs != 1 else ''} ({self.reason})"


@dataclass(frozen=True)
class TrialMemory:
    """An estimate of one trial's device memory, in bytes."""

    state: int
    """Weights, gradients and AdamW's two moments, fp32."""
    activations: int
    """What autograd keeps of the largest batch (the largest canvas, full batch)."""
    context: int = CONTEXT_BYTES
    safety: float = SAFETY

    @property
    def total(self) -> int:
        return int((self.state + self.activations) * self.safety) + self.context


def cores() -> int:
    """CPU cores this process may use."""
    return len(cpus())


def _gib(n: float) -> str:
    return f"{n / GIB:.1f}"


def pack(free_bytes: int, need_bytes: int, cores: int, cap: int = MAX_JOBS) -> Packing:
    """Trials at once on a device with `free_bytes` free, each needing `need_bytes`: as many
    as fit, at most `cap` and at most `cores`; at least 1."""
    if need_bytes <= 0 or cores < 1 or cap < 1:
        raise ValueError(f"need_bytes, cores and cap must be positive but got {need_bytes}, "
                         f"{cores} and {cap}.")
    fit = max(0, free_bytes) // need_bytes
    limit = min(cap, cores)
    jobs = max(1, min(fit, limit))
    seen = f"{_gib(free_bytes)} GiB free / {_gib(need_bytes)} GiB a trial"
    if fit < 1:
        return Packing(1, f"{seen}: not even one fits; it may run out of memory")
    if fit > jobs:
        seen += f" ({fit} fit)"
    bound = f", {cores} CPU cores" if cores < cap else ""
    return Packing(jobs, f"{seen}, cap {cap}{bound}")


def parameters(model: ModelConfig) -> int:
    """The GridTransformer's parameter count (trainer/model.py), without building it."""
    d, r = model.d_model, model.mlp_ratio
    block = (4 + 2 * r) * d * d + 2 * d  # qkv, proj, the MLP; two RMSNorm weights
    embeddings = (model.n_tasks + VOCAB + 2 * model.max_side + 2) * d  # + segment (2)
    return model.n_layers * block + embeddings + d + d * N_CLASSES  # final norm, head


def canvas_side(max_grid: int) -> int:
    """The largest canvas a run meets: the bucket that holds grids of side `max_grid`."""
    return next(side for side in BUCKETS if max_grid < side)


def trial_memory(config: TrainConfig, n_tasks: int = ARC_TASKS) -> TrialMemory:
    """Estimate the device memory of one trial of `config` from its model size, batch size
    and largest grid (parameters + optimizer state + activations of one batch)."""
    d, layers, heads = SIZES[config.model]
    model = ModelConfig(n_tasks=n_tasks, d_model=d, n_layers=layers, n_heads=heads)
    side = canvas_side(config.max_grid)
    tokens = 1 + 2 * side * side  # task token, input canvas, one query per output cell
    per_token = (layers * (_SAVED_PER_LAYER + 4 * model.mlp_ratio) + _SAVED_STEM) * d
    logits = side * side * N_CLASSES * _SAVED_PER_LOGIT
    activations = config.batch_size * (tokens * per_token + logits)
    return TrialMemory(state=16 * parameters(model), activations=activations)


def free_device_bytes(device: str) -> int | None:
    """Free memory of the device `device` resolves to (`auto`: CUDA when present), or None
    when it is not a CUDA device."""
    resolved = pick_device(device)
    if resolved.type != "cuda":
        return None
    free, _total = torch.cuda.mem_get_info(resolved)
    return int(free)


def choose_jobs(given: int | None, device: str, need_bytes: Callable[[], int],
                cores: int) -> Packing:
    """`--jobs` when given; else 1 on a CPU, and on CUDA as many trials as fit (`pack`)."""
    if given is not None:
        return Packing(given, "as given by --jobs")
    free = free_device_bytes(device)
    if free is None:
        return Packing(1, "on the CPU; --jobs N runs N at once")
    return pack(free, need_bytes(), cores)
