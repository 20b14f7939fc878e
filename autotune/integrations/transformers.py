"""Recovery inside `transformers.Trainer.train`: `RecoveryCallback`.

    from autotune.integrations.transformers import RecoveryCallback
    trainer = transformers.Trainer(model=model, args=args, train_dataset=train,
                                   eval_dataset=val, callbacks=[RecoveryCallback("runs/hf")])

At every optimizer step (`on_pre_optimizer_step`: after backward and the Trainer's
clipping, before the update) the step detectors judge the step's training loss (the mean
of the losses the model returned for the step's micro-batches) and the gradient norm; a
diverged step's gradients are dropped, so the optimizer does not apply it, and at
`on_step_end` (after the scheduler stepped) the run is rolled back in place to a CPU copy
of the best or last good state: the model's weights, the optimizer's state, the
scheduler's state and autotune's counters. The policy's changes then hold under the
Trainer's own machinery: a new learning rate is written into the scheduler's base rates
(the Trainer's schedulers are `LambdaLR`s, which would undo a plain cut at their next
step; `autotune.integrations.parts`), clipping into `args.max_grad_norm`, weight decay into
the param groups that decay. After every evaluation (`on_evaluate`, the metric `monitor`,
`eval_loss` by default) the epoch detectors judge the timeline: give the Trainer an
`eval_dataset` and an `eval_strategy` (`"epoch"` or `"steps"`) for those.

The model must return its loss (a Hugging Face model does when the batch holds `labels`;
a plain module may return `{"loss": ...}`). With `max_grad_norm > 0` the Trainer clips
before the callback sees the gradients, so a gradient explosion is judged on the clipped
norm (a non-finite gradient stays non-finite, and a spike in the loss is still seen).

The run directory gets `config.yaml`, `metrics.jsonl` (one record per evaluation),
`events.jsonl`, `effective_config.yaml` and `summary.json`: `autotune diagnose RUN_DIR`
reads it. `recovery="off"` stops training at the first divergence
(`control.should_training_stop`), `"watch"` only records alarms. With `trial=` the
callback reports to the Optuna trial and prunes as `autotune search` does, raising
`optuna.TrialPruned` out of `train`. Inside `Trainer.hyperparameter_search` leave `trial`
out: the Trainer reports to Optuna itself at `state.global_step`, which a rollback does
not move back, the callback recovers, and each trial's run goes to `RUN_DIR/trial-N` (the
N-th training of the search, from 0).

One process only: a distributed run (`args.world_size > 1`) is refused at the start of
training with a ValueError.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

try:
    import transformers
except ImportError:  # pragma: no cover - depends on the environment
    raise ImportError("autotune.integrations.transformers needs transformers: "
                      "pip install 'autotune[transformers]'") from None

import optuna
import torch
from torch import nn

from autotune.events import RunStatus
from autotune.integrations.parts import TrainingParts, grad_norm
from autotune.integrations.session import Session, callback_settings, check_single_process
from autotune.recovery.supervisor import RunResult

__all__ = ["RecoveryCallback"]

TrainingArguments = transformers.TrainingArguments
TrainerState = transformers.TrainerState
TrainerControl = transformers.TrainerControl


def _loss_of(output: Any) -> torch.Tensor | None:
    """The loss a model returned, as the Trainer reads it (`outputs["loss"]` of a mapping,
    else the first element)."""
    if isinstance(output, dict):
        return output.get("loss")
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0] if output[0].ndim == 0 else None
    return None


def _steps_between_evaluations(args: TrainingArguments, state: TrainerState) -> int | None:
    """Optimizer steps from one evaluation to the next (None: not evaluating by steps or
    epochs)."""
    strategy = str(getattr(args.eval_strategy, "value", args.eval_strategy))
    if strategy == "steps" and args.eval_steps:
        steps = args.eval_steps
        return int(math.ceil(state.max_steps * steps)) if steps < 1 else int(steps)
    if strategy == "epoch" and state.max_steps > 0 and args.num_train_epochs > 0:
        return max(int(state.max_steps // math.ceil(args.num_train_epochs)), 1)
    return None


class RecoveryCallback(transformers.TrainerCallback):
    """Detect divergence in an HF Trainer run, roll back in place, change the cause, go on.

    Args:
        run_dir: the run directory to create (one per `train`; an existing run is an error).
        recovery: `on` (recover), `off` (stop at the first divergence) or `watch` (alarms
            only).
        max_recoveries: recoveries allowed before training stops (status `gave_up`).
        trial: an `optuna.Trial` to report to and prune, as `autotune search` does.
        monitor: the evaluation metric the epoch detectors read.
    """

    def __init__(self, run_dir: str | Path, recovery: str = "on", max_recoveries: int = 4,
                 trial: optuna.Trial | None = None, *, monitor: str = "eval_loss") -> None:
        self.run_dir = Path(run_dir)
        self.recovery, self.max_recoveries = callback_settings(recovery, max_recoveries)
        self.trial = trial
        self.monitor = monitor
        self.session: Session | None = None
        self.runs = 0  # train calls: a hyperparameter search trains once per trial
        self._losses: list[float] = []
        self._hook: torch.utils.hooks.RemovableHandle | None = None

    @property
    def result(self) -> RunResult | None:
        """How the run ended (after `train`)."""
        return self.session.result if self.session else None

    # -- set-up --------------------------------------------------------------------------

    def on_train_begin(self, args: TrainingArguments, state: TrainerState,
                       control: TrainerControl, **kwargs: Any) -> None:
        # The Trainer passes its model, optimizer and scheduler as keyword arguments.
        model: nn.Module = kwargs["model"]
        optimizer: torch.optim.Optimizer = kwargs["optimizer"]
        lr_scheduler: Any = kwargs.get("lr_scheduler")
        check_single_process(args.world_size, "Hugging Face Trainer")

        def set_clip(value: float) -> None:
            args.max_grad_norm = value

        parts = TrainingParts(model, optimizer, lr_scheduler,
                              get_clip=lambda: args.max_grad_norm, set_clip=set_clip,
                              steps_per_epoch=_steps_between_evaluations(args, state))
        planned = math.ceil(args.num_train_epochs) if args.max_steps <= 0 else None
        # Inside Trainer.hyperparameter_search (the state holds the trial's parameters)
        # every trial is a run of its own, in RUN_DIR/trial-N.
        run_dir = (self.run_dir if state.trial_params is None
                   else self.run_dir / f"trial-{self.runs}")
        self.runs += 1
        self._losses = []
        self.session = Session(run_dir, parts, recovery=self.recovery,
                               max_recoveries=self.max_recoveries, planned_epochs=planned,
                               trial=self.trial)
        self._hook = model.register_forward_hook(self._on_forward)

    def _on_forward(self, module: nn.Module, inputs: Any, output: Any) -> None:
        if module.training and self.session is not None and self.session.result is None:
            loss = _loss_of(output)
            if loss is not None:
                self._losses.append(float(loss.detach()))

    # -- steps ---------------------------------------------------------------------------

    def on_pre_optimizer_step(self, args: TrainingArguments, state: TrainerState,
                              control: TrainerControl, **kwargs: Any) -> None:
        model: nn.Module = kwargs["model"]
        if self.session is None or self.session.stopped:
            return
        losses, self._losses = self._losses, []
        if not losses:
            raise ValueError("RecoveryCallback reads the training loss the model returns, but "
                             "the model returned none: give the batches `labels` (a "
                             "Hugging Face model then returns its loss) or return "
                             "{'loss': ...} from forward.")
        # Under fp16's GradScaler an infinite gradient is routine (the scaler skips that
        # step and lowers its scale): only the loss is judged there.
        norm = None if args.fp16 else grad_norm(model)
        if not self.session.before_update(sum(losses) / len(losses), norm):
            for p in model.parameters():
                p.grad = None  # the optimizer skips a parameter without a gradient

    def on_step_end(self, args: TrainingArguments, state: TrainerState,
                    control: TrainerControl, **kwargs: Any) -> None:
        if self.session is not None:
            self._stop_on(control, self.session.after_update())

    # -- evaluations ---------------------------------------------------------------------

    def on_evaluate(self, args: TrainingArguments, state: TrainerState,
                    control: TrainerControl, metrics: dict[str, float] | None = None,
                    **kwargs: Any) -> None:
        # An evaluation after training (trainer.evaluate()) is not an epoch.
        if self.session is None or self.session.result is not None:
            return
        value = (metrics or {}).get(self.monitor)
        if value is None:
            raise ValueError(f"RecoveryCallback reads the evaluation metric {self.monitor!r}, "
                             f"but the evaluation gave only {sorted(metrics or {})}; pass "
                             f"monitor=.")
        self._stop_on(control, self.session.validated(float(value)))

    def _stop_on(self, control: TrainerControl, status: RunStatus | None) -> None:
        if status is not None:
            control.should_training_stop = True

    # -- the end -------------------------------------------------------------------------

    def on_train_end(self, args: TrainingArguments, state: TrainerState,
                     control: TrainerControl, **kwargs: Any) -> None:
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
        if self.session is not None:
            self.session.finish()
