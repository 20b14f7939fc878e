"""Recovery inside `lightning.Trainer.fit`: `RecoveryCallback`.

    from autotune.integrations.lightning import RecoveryCallback
    trainer = lightning.Trainer(max_epochs=20, callbacks=[RecoveryCallback("runs/lit")])

At every optimizer step (`on_before_optimizer_step`: after backward, before clipping and
the update) the step detectors judge the loss and the raw gradient norm; a diverged step's
gradients are dropped, so the optimizer does not apply it, and once the step is over
(`on_train_batch_end`, after the scheduler stepped) the run is rolled back in place to a
CPU copy of the best or last good state: the module's weights, the optimizer's state, the
scheduler's state and autotune's counters. The policy's changes then hold under
Lightning's own machinery: a new learning rate is written into the scheduler's base rates
(`autotune.integrations.parts`), clipping into `trainer.gradient_clip_val`, weight decay
into the optimizer's param groups. After every validation (`on_validation_end`, the
metric `monitor`, `val_loss` by default) the epoch detectors judge the timeline.

The run directory gets `config.yaml`, `metrics.jsonl` (one record per validation),
`events.jsonl`, `effective_config.yaml` and `summary.json`: `autotune diagnose RUN_DIR`
reads it. `recovery="off"` stops the fit at the first divergence (`trainer.should_stop`),
`"watch"` only records alarms. With `trial=` the callback reports to the Optuna trial and
prunes as `autotune search` does (`autotune.integrations.trial`), raising
`optuna.TrialPruned` out of `fit` like Optuna's `PyTorchLightningPruningCallback`.

One process only: a multi-device strategy (`trainer.world_size > 1`) is refused at setup
with a ValueError, as is a module with several optimizers or manual optimization.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

try:
    import lightning.pytorch as pl
except ImportError:  # pragma: no cover - depends on the environment
    raise ImportError("autotune.integrations.lightning needs Lightning: "
                      "pip install 'autotune[lightning]'") from None

import optuna
import torch

from autotune.events import RunStatus
from autotune.integrations.parts import TrainingParts, grad_norm
from autotune.integrations.session import Session, callback_settings, check_single_process
from autotune.recovery.supervisor import RunResult

__all__ = ["RecoveryCallback"]


def _steps_between_validations(trainer: pl.Trainer) -> int | None:
    """Optimizer steps from one validation to the next (None: Lightning does not say)."""
    batches, every = trainer.val_check_batch, trainer.check_val_every_n_epoch
    if not isinstance(batches, int) or batches <= 0:
        return None
    return max(batches // trainer.accumulate_grad_batches, 1) * (every or 1)


class RecoveryCallback(pl.Callback):
    """Detect divergence in a Lightning fit, roll back in place, change the cause, go on.

    Args:
        run_dir: the run directory to create (one per fit; an existing run is an error).
        recovery: `on` (recover), `off` (stop at the first divergence) or `watch` (alarms
            only).
        max_recoveries: recoveries allowed before the fit stops (status `gave_up`).
        trial: an `optuna.Trial` to report to and prune, as `autotune search` does.
        monitor: the logged validation loss the epoch detectors read.
    """

    def __init__(self, run_dir: str | Path, recovery: str = "on", max_recoveries: int = 4,
                 trial: optuna.Trial | None = None, *, monitor: str = "val_loss") -> None:
        super().__init__()
        self.run_dir = Path(run_dir)
        self.recovery, self.max_recoveries = callback_settings(recovery, max_recoveries)
        self.trial = trial
        self.monitor = monitor
        self.session: Session | None = None
        self._losses: list[float] = []

    @property
    def result(self) -> RunResult | None:
        """How the run ended (after `fit`)."""
        return self.session.result if self.session else None

    # -- set-up --------------------------------------------------------------------------

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit":
            check_single_process(trainer.world_size, "Lightning")

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not pl_module.automatic_optimization or len(trainer.optimizers) != 1:
            raise ValueError("RecoveryCallback supports automatic optimization with one "
                             "optimizer, but this LightningModule has "
                             f"{len(trainer.optimizers)} optimizer(s) and automatic_optimization"
                             f"={pl_module.automatic_optimization}.")
        configs = trainer.lr_scheduler_configs
        if len(configs) > 1:
            raise ValueError(f"RecoveryCallback supports one learning-rate scheduler, but this "
                             f"LightningModule configures {len(configs)}.")

        def set_clip(value: float) -> None:
            trainer.gradient_clip_val = value

        parts = TrainingParts(pl_module, trainer.optimizers[0],
                              configs[0].scheduler if configs else None,
                              get_clip=lambda: trainer.gradient_clip_val, set_clip=set_clip,
                              steps_per_epoch=_steps_between_validations(trainer))
        planned = trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else None
        self.session = Session(self.run_dir, parts, recovery=self.recovery,
                               max_recoveries=self.max_recoveries, planned_epochs=planned,
                               trial=self.trial)

    # -- steps ---------------------------------------------------------------------------

    def on_before_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           loss: torch.Tensor) -> None:
        # Lightning divides the loss by accumulate_grad_batches before backward.
        self._losses.append(float(loss.detach()) * trainer.accumulate_grad_batches)

    def on_before_optimizer_step(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                                 optimizer: torch.optim.Optimizer) -> None:
        if self.session is None or self.session.stopped:
            return
        losses, self._losses = self._losses, []
        loss = sum(losses) / len(losses) if losses else float("nan")
        # Under fp16's GradScaler an infinite gradient is routine (the scaler skips that
        # step and lowers its scale): only the loss is judged there.
        scaled = getattr(trainer.precision_plugin, "scaler", None) is not None
        if not self.session.before_update(loss, None if scaled else grad_norm(pl_module)):
            for p in pl_module.parameters():
                p.grad = None  # the optimizer skips a parameter without a gradient

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.session is not None:
            self._stop_on(trainer, self.session.after_update())

    # -- validations ---------------------------------------------------------------------

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Sanity checks and validations after the fit (trainer.validate) are not epochs.
        if self.session is None or trainer.sanity_checking or self.session.result is not None:
            return
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:
            raise ValueError(f"RecoveryCallback reads the validation loss {self.monitor!r}, "
                             f"but the module logged only "
                             f"{sorted(trainer.callback_metrics) or 'nothing'}; log it in "
                             f"validation_step (self.log({self.monitor!r}, loss)) or pass "
                             f"monitor=.")
        self._stop_on(trainer, self.session.validated(float(value)))

    def _stop_on(self, trainer: pl.Trainer, status: RunStatus | None) -> None:
        if status is not None:
            trainer.should_stop = True

    # -- the end -------------------------------------------------------------------------

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.session is not None:
            self.session.finish()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                     exception: BaseException) -> None:
        # A pruned trial ends here (the session recorded its own prunes already); any
        # other exception leaves the run directory as it stood, without a summary.
        if self.session is not None and isinstance(exception, optuna.TrialPruned):
            self.session.finish(pruned_reason=str(exception))
