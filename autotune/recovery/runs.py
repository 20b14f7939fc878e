"""ARC runs: `autotune train` and `autotune resume` with our own trainer.

An ARC run's configuration is one flat mapping (config.yaml, `--config`, `--set`): the
trainer's keys (`trainer.config.TrainConfig`) and the supervisor's (`max_loss_increase`,
`max_recoveries`, `recovery`, `keep_checkpoints`). `RunConfig` holds the two halves. A
completed ARC run is also scored on the held-out test pairs (unless `score=False`: a search
scores only its winner, afterwards, with `score_run`), and its applied learning rate is
audited against `lr_at`: `ArcTrainer` is the ARC trainer with the Trainable's optional
members `held_out_scores` and `schedule_audit`, which `autotune.recovery.supervise.finish`
calls for any trainer that has them.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autotune.errors import ConfigError
from autotune.recovery import checkpoint_files
from autotune.recovery.lock import Holder, run_lock
from autotune.recovery.rundir import RunDir
from autotune.recovery.settings import SUPERVISOR_KEYS, SupervisorConfig, split
from autotune.recovery.supervise import check_resumable, continue_run, start
from autotune.recovery.supervisor import Hooks, RunResult
from trainer.config import TrainConfig, check_keys, from_dict, resolve
from trainer.data import ArcData, build_data
from trainer.inject import Injector
from trainer.loop import Trainer, pick_device
from trainer.schedule import audit

__all__ = ["ArcTrainer", "RunConfig", "arc_trainer", "resolve_run", "resume_run", "score_run",
           "start_run"]


@dataclass(frozen=True)
class RunConfig:
    """An ARC run's configuration: the trainer's half and the supervisor's."""

    train: TrainConfig
    supervisor: SupervisorConfig = SupervisorConfig()

    def to_dict(self) -> dict[str, Any]:
        """The flat mapping of config.yaml (trainer keys first)."""
        return {**self.train.to_dict(), **self.supervisor.to_dict()}

    @classmethod
    def from_dict(cls, mapping: Mapping[str, Any]) -> RunConfig:
        """A validated RunConfig from a flat mapping (unknown keys are ConfigError)."""
        if not isinstance(mapping, Mapping):
            raise ConfigError(f"a configuration must be a mapping of keys to values but got "
                              f"{type(mapping).__name__}.")
        check_keys(mapping, SUPERVISOR_KEYS)
        rest, supervisor = split(mapping)
        return cls(from_dict(rest), supervisor)


def resolve_run(profile: str, file_values: Mapping[str, Any] | None = None,
                set_values: Mapping[str, Any] | None = None) -> RunConfig:
    """Profile defaults, then the config file, then `--set` values (last wins)."""
    for values in (file_values or {}, set_values or {}):
        check_keys(values, SUPERVISOR_KEYS)
    merged = {**(file_values or {}), **(set_values or {})}
    rest, supervisor = split(merged)
    return RunConfig(resolve(profile, {}, rest), supervisor)


class ArcTrainer(Trainer):
    """The ARC trainer with the Trainable's optional ARC members."""

    injects_faults = True  # `trainer.inject`, at the steps of compute it keeps in its state

    def held_out_scores(self) -> dict[str, Any]:
        """The held-out test pairs: loss, cells, exact, and ARC's pass@2 with the copy
        baseline."""
        return {**self.evaluate("test"), **self.arc_scores("test")}

    def schedule_audit(self, since_step: int) -> dict[str, Any]:
        """The applied learning rate checked against `lr_at` from `since_step` on."""
        trace = [(s, lr) for s, lr in self.lr_trace if s >= since_step]
        result = audit([s for s, _ in trace], [lr for _, lr in trace], self.config,
                       self.steps_per_epoch)
        return {"ok": result.ok, "checked_steps": result.checked, "message": result.message,
                "since_step": since_step}


def arc_trainer(config: TrainConfig, device: str, data: ArcData | None = None,
                fault_stream: int = 0) -> ArcTrainer:
    """An ARC trainer for `config` (its data loaded unless given) with the run's faults."""
    data = data if data is not None else build_data(config)  # bad data: nothing written yet
    return ArcTrainer(config, data, pick_device(device),
                      Injector.from_env(config.seed, stream=fault_stream))


def start_run(config: RunConfig | TrainConfig, run_path: Path, device: str = "auto",
              hooks: Hooks | None = None, data: ArcData | None = None,
              fault_stream: int = 0, score: bool = True,
              holder: str = "autotune train") -> RunResult:
    """Train `config` from scratch in `run_path`, supervised per its supervisor settings,
    holding the run directory's lock (`holder` says who, for a second process's message).
    `fault_stream` picks the run's stream of `AUTOTUNE_INJECT` rate faults (a search
    trial's number; `trainer.inject`); `score=False` skips the held-out scoring."""
    if isinstance(config, TrainConfig):
        config = RunConfig(config)
    trainer = arc_trainer(config.train, device, data, fault_stream)
    return start(trainer, Path(run_path), config.train.epochs, config.train.to_dict(),
                 config.supervisor, hooks=hooks, holder=holder, score=score)


def resume_run(run_path: Path, epochs: int | None = None, device: str = "auto",
               hooks: Hooks | None = None, fault_stream: int = 0,
               score: bool = True, holder: str = "autotune resume",
               steal_from: Collection[Holder] = ()) -> RunResult:
    """Continue a run: a diverged one is rolled back and changed first (and recovers from
    then on, even if it ran with recovery off), an interrupted one continues from its latest
    valid checkpoint, a finished one is extended to `epochs`. The run directory's lock is
    held throughout (`autotune.recovery.lock`; `steal_from`: holders whose lock may be
    taken, a search's dead or hung workers)."""
    run = RunDir.open(run_path)
    check_resumable(run)
    config = RunConfig.from_dict(run.effective_config())
    if epochs is not None:
        config = RunConfig(config.train.replace(epochs=epochs), config.supervisor)
    trainer = arc_trainer(config.train, device, None, fault_stream)
    with run_lock(run.path, holder, steal_from):
        return continue_run(trainer, run, config.train.epochs, config.supervisor,
                            hooks=hooks, score=score)


def held_out(trainer: ArcTrainer) -> dict[str, Any]:
    """The held-out test scores of the trainer's weights as they are."""
    return trainer.held_out_scores()


def score_run(run_path: Path, device: str = "auto", data: ArcData | None = None
              ) -> dict[str, Any]:
    """Score a finished run on the held-out test pairs from its latest checkpoint (the
    weights it ended with), and add the scores to its summary.json (`test`)."""
    run = RunDir.open(run_path)
    config = RunConfig.from_dict(run.effective_config())
    trainer = arc_trainer(config.train, device, data)
    loaded = checkpoint_files.load_latest(run.checkpoints, map_location=trainer.device)
    if loaded is None:
        raise ConfigError(f"run directory {str(run.path)!r} has no valid checkpoint to "
                          f"score.")
    _, state = loaded
    trainer.load_state_dict(state.get("trainer", state))
    scores = held_out(trainer)
    summary = run.summary()
    if summary is not None:
        run.write_summary({**summary, "test": scores})
    return scores
