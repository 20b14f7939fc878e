"""autotune.integrations.transformers: a real HF Trainer on the CPU, models built here."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import optuna
import pytest
import torch
import transformers

from autotune.diagnose import FindingCode, diagnose_target
from autotune.errors import ConfigError
from autotune.events import EventKind, RunStatus
from autotune.integrations.transformers import RecoveryCallback
from autotune.search.pruner import default_pruner
from tests.integrations.common import DIVERGING_LR, STABLE_LR, lines, network, regression

EPOCHS = 6
VOCAB, LENGTH = 32, 16

transformers.logging.set_verbosity_error()


class Pairs(torch.utils.data.Dataset):
    """Regression pairs as the Trainer's default collator stacks them."""

    def __init__(self, n: int, seed: int) -> None:
        self.x, self.y = regression(n, seed)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"x": self.x[i], "labels": self.y[i]}


class Regression(torch.nn.Module):
    """An MLP that returns its loss as a Trainer expects. `nan_at_call`: that training
    forward (1-based) returns NaN, once; `spike_at_call`: 1000 times its loss, once;
    `nan_at_evaluation`: that evaluation's loss is NaN, once."""

    def __init__(self, nan_at_call: int | None = None,
                 nan_at_evaluation: int | None = None,
                 spike_at_call: int | None = None) -> None:
        super().__init__()
        self.net = network()
        self.nan_at_call, self.nan_at_evaluation = nan_at_call, nan_at_evaluation
        self.spike_at_call = spike_at_call
        self.calls = self.evaluations = 0

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.net(x)
        loss = torch.nn.functional.mse_loss(out, labels)
        if self.training:
            self.calls += 1
            if self.calls == self.spike_at_call:
                return {"loss": loss * 1000.0, "logits": out}
            poisoned = self.calls == self.nan_at_call
        else:
            self.evaluations += 1  # one batch per evaluation
            poisoned = self.evaluations == self.nan_at_evaluation
        return {"loss": loss * math.nan if poisoned else loss, "logits": out}


class Sequences(torch.utils.data.Dataset):
    """Token sequences that count up from a random start by a random stride."""

    def __init__(self, n: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        start = torch.randint(0, VOCAB, (n, 1), generator=g)
        stride = torch.randint(1, 4, (n, 1), generator=g)
        self.ids = (start + stride * torch.arange(LENGTH)) % VOCAB

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[i], "labels": self.ids[i]}


def _tiny_gpt2() -> transformers.GPT2LMHeadModel:
    torch.manual_seed(0)
    return transformers.GPT2LMHeadModel(transformers.GPT2Config(
        vocab_size=VOCAB, n_positions=LENGTH, n_embd=32, n_layer=2, n_head=2, bos_token_id=0,
        eos_token_id=0))


def _train(model: torch.nn.Module, callback: RecoveryCallback | None, lr: float,
           out: Path, **args: Any) -> transformers.Trainer:
    """The Trainer's defaults (AdamW, linear decay, clipping at 1.0) unless `args` say."""
    regression_model = isinstance(model, Regression)
    training = transformers.TrainingArguments(
        output_dir=str(out), learning_rate=lr, num_train_epochs=EPOCHS,
        per_device_train_batch_size=16, per_device_eval_batch_size=128, warmup_steps=10,
        eval_strategy="epoch", save_strategy="no", logging_strategy="no", report_to="none",
        use_cpu=True, disable_tqdm=True, seed=0, **args)
    train, val = ((Pairs(320, 1), Pairs(128, 2)) if regression_model
                  else (Sequences(320, 1), Sequences(128, 2)))
    trainer = transformers.Trainer(model=model, args=training, train_dataset=train,
                                   eval_dataset=val, callbacks=[callback] if callback else [])
    trainer.train()
    return trainer


SGD = {"optim": "sgd", "max_grad_norm": 0.0}  # plain SGD: a rate too high ends NaN


def test_a_diverging_rate_ends_stable_with_the_callback_and_not_without(
        tmp_path: Path) -> None:
    chance = math.log(VOCAB)  # the loss of a model that knows nothing
    plain = _train(_tiny_gpt2(), None, 2.0, tmp_path / "plain")
    assert plain.evaluate()["eval_loss"] > chance

    callback = RecoveryCallback(tmp_path / "run")
    trainer = _train(_tiny_gpt2(), callback, 2.0, tmp_path / "out")
    result = callback.result
    assert result is not None and result.status is RunStatus.COMPLETED
    assert result.recoveries >= 1 and result.hparams["learning_rate"] < 2.0
    assert trainer.evaluate()["eval_loss"] < chance - 0.5
    run = tmp_path / "run"
    assert [e["kind"] for e in lines(run / "events.jsonl")][:2] == ["diverged", "recovered"]
    assert FindingCode.RECOVERED in {f.code for f in diagnose_target(run)}


def test_a_nan_at_a_known_step_is_caught_before_the_update_and_recovered(
        tmp_path: Path) -> None:
    callback = RecoveryCallback(tmp_path / "run")
    model = Regression(nan_at_call=27)
    # An evaluation of the initial weights is not an epoch of the timeline.
    trainer = _train(model, callback, STABLE_LR, tmp_path / "out", eval_on_start=True, **SGD)
    result = callback.result
    assert result is not None and result.status is RunStatus.COMPLETED
    diverged, recovered = result.events
    assert (diverged.kind, diverged.reason, diverged.step) == (
        EventKind.DIVERGED, "nonfinite_loss", 26)
    assert (recovered.kind, recovered.rolled_back_to) == (EventKind.RECOVERED, 1)
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert trainer.evaluate()["eval_loss"] < 0.1
    assert lines(tmp_path / "run" / "metrics.jsonl")[0]["epoch"] == 1


def test_the_rate_after_a_recovery_is_the_cut_rate_under_the_trainers_scheduler(
        tmp_path: Path) -> None:
    callback = RecoveryCallback(tmp_path / "run")
    _train(Regression(nan_at_evaluation=3), callback, STABLE_LR, tmp_path / "out", **SGD)
    assert callback.result is not None
    assert [(e.kind, e.epoch) for e in callback.result.events] == [
        (EventKind.DIVERGED, 3), (EventKind.RECOVERED, 2)]
    undone, replayed = [r for r in lines(tmp_path / "run" / "metrics.jsonl")
                        if r["epoch"] == 3]
    assert replayed["step"] == undone["step"]
    assert replayed["lr"] == pytest.approx(undone["lr"] / 3, rel=1e-9)
    assert not [e for e in callback.result.events if e.kind is EventKind.ALARM]


def test_a_spike_turns_clipping_on_in_the_trainers_own_setting(tmp_path: Path) -> None:
    callback = RecoveryCallback(tmp_path / "run")
    trainer = _train(Regression(spike_at_call=50), callback, STABLE_LR, tmp_path / "out",
                     **SGD)
    assert callback.result is not None
    diverged, recovered = callback.result.events
    assert (diverged.reason, diverged.step) == ("loss_spike", 49)
    assert recovered.changes == {"grad_clip": [0.0, 1.0]}
    assert trainer.args.max_grad_norm == 1.0


def test_watch_only_alarms(tmp_path: Path) -> None:
    callback = RecoveryCallback(tmp_path / "run", recovery="watch")
    trainer = _train(Regression(), callback, DIVERGING_LR, tmp_path / "out", **SGD)
    assert callback.result is not None and callback.result.status is RunStatus.COMPLETED
    assert {e.kind for e in callback.result.events} == {EventKind.ALARM}
    assert callback.result.hparams["learning_rate"] == DIVERGING_LR
    assert math.isnan(trainer.evaluate()["eval_loss"])


def test_inside_an_optuna_study(tmp_path: Path) -> None:
    study = optuna.create_study(pruner=default_pruner())
    study.enqueue_trial({"lr": DIVERGING_LR, "budget": 4})
    study.enqueue_trial({"lr": DIVERGING_LR, "budget": 0})

    def objective(trial: optuna.Trial) -> float:
        lr = trial.suggest_float("lr", 0.01, 5.0, log=True)
        budget = trial.suggest_int("budget", 0, 4)
        callback = RecoveryCallback(tmp_path / f"trial{trial.number}", max_recoveries=budget,
                                    trial=trial)
        _train(Regression(), callback, lr, tmp_path / "out", **SGD)
        assert callback.result is not None
        return callback.result.best_val_loss

    study.optimize(objective, n_trials=2)
    recovered, spent = study.trials
    assert recovered.state is optuna.trial.TrialState.COMPLETE and recovered.value < 0.1
    assert recovered.user_attrs["recoveries"] >= 1 and recovered.user_attrs["stable"]
    steps = list(recovered.intermediate_values)
    assert steps == sorted(set(steps))
    assert spent.state is optuna.trial.TrialState.PRUNED
    assert spent.user_attrs["pruned_reason"].startswith("recovery budget spent")


def test_inside_the_trainers_own_hyperparameter_search(tmp_path: Path) -> None:
    callback = RecoveryCallback(tmp_path / "runs")
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "out"), num_train_epochs=4, per_device_train_batch_size=16,
        per_device_eval_batch_size=128, warmup_steps=10, eval_strategy="epoch",
        save_strategy="no", logging_strategy="no", report_to="none", use_cpu=True,
        disable_tqdm=True, seed=0, **SGD)
    trainer = transformers.Trainer(model_init=lambda: Regression(), args=args,
                                   train_dataset=Pairs(320, 1), eval_dataset=Pairs(128, 2),
                                   callbacks=[callback])
    best = trainer.hyperparameter_search(
        hp_space=lambda trial: {"learning_rate": trial.suggest_categorical(
            "learning_rate", [DIVERGING_LR])},
        backend="optuna", n_trials=2, direction="minimize")
    assert best.objective < 0.1  # the Trainer's own objective: the last eval_loss
    for n in (0, 1):
        events = lines(tmp_path / "runs" / f"trial-{n}" / "events.jsonl")
        assert [e["kind"] for e in events][:2] == ["diverged", "recovered"]


def test_bad_arguments_and_a_missing_transformers_fail_with_one_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="recovery must be on, off or watch"):
        RecoveryCallback(tmp_path / "run", recovery="sometimes")
    monkeypatch.setitem(sys.modules, "transformers", None)
    monkeypatch.delitem(sys.modules, "autotune.integrations.transformers")
    with pytest.raises(ImportError, match=r"pip install 'autotune\[transformers\]'"):
        import autotune.integrations.transformers  # noqa: F401
