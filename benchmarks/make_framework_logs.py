"""Write real training logs of other frameworks, for the tests of `autotune diagnose`.

Each case trains a tiny model on a synthetic task with the framework's own logger, so the
file is exactly what that framework writes: a PyTorch Lightning CSVLogger `metrics.csv`, a
Keras CSVLogger file, a Hugging Face `trainer_state.json`, TensorBoard event files (from
`torch.utils.tensorboard`) and text logs printed by a plain PyTorch loop. The frameworks are
not dependencies of autotune; install them to run this script:

    pip install lightning keras transformers accelerate tensorboard
    KERAS_BACKEND=torch python benchmarks/make_framework_logs.py --out tests/diagnose/logs

What each log shows is listed in `tests/diagnose/logs/SOURCES.md`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "torch")

import torch  # noqa: E402
from torch import nn  # noqa: E402

torch.set_num_threads(1)


# ----------------------------------------------------------------------------- the data


def blobs(n: int, dim: int = 16, classes: int = 4, seed: int = 0, noise: float = 1.0,
          flip: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Gaussian blobs around fixed centres; `flip` of the labels made random."""
    centres = torch.randn(classes, dim, generator=torch.Generator().manual_seed(123)) * 2
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, classes, (n,), generator=g)
    x = centres[y] + noise * torch.randn(n, dim, generator=g)
    if flip > 0:
        mask = torch.rand(n, generator=g) < flip
        y = torch.where(mask, torch.randint(0, classes, (n,), generator=g), y)
    return x, y


def mlp(dim: int = 16, hidden: int = 64, classes: int = 4, depth: int = 2) -> nn.Module:
    layers: list[nn.Module] = []
    width = dim
    for _ in range(depth):
        layers += [nn.Linear(width, hidden), nn.ReLU()]
        width = hidden
    layers.append(nn.Linear(width, classes))
    return nn.Sequential(*layers)


# ----------------------------------------------------------------------------- Lightning


def lightning_run(root: Path, name: str, *, epochs: int, lr: float, n_train: int,
                  hidden: int, train_key: str, val_key: str, flip: float = 0.0,
                  monitor: bool = False, optimizer: str = "adam", noise: float = 1.0,
                  seed: int = 0) -> None:
    import lightning as L
    from lightning.pytorch.callbacks import LearningRateMonitor
    from lightning.pytorch.loggers import CSVLogger
    from torch.utils.data import DataLoader, TensorDataset

    L.seed_everything(seed, verbose=False)

    class Classifier(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = mlp(hidden=hidden, depth=3)

        def training_step(self, batch, _):  # type: ignore[no-untyped-def]
            x, y = batch
            loss = nn.functional.cross_entropy(self.net(x), y)
            self.log(train_key, loss, on_step=True, on_epoch=True)
            return loss

        def validation_step(self, batch, _):  # type: ignore[no-untyped-def]
            x, y = batch
            self.log(val_key, nn.functional.cross_entropy(self.net(x), y))

        def configure_optimizers(self):  # type: ignore[no-untyped-def]
            if optimizer == "sgd":
                opt = torch.optim.SGD(self.parameters(), lr=lr, momentum=0.9)
            else:
                opt = torch.optim.Adam(self.parameters(), lr=lr)
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
            return {"optimizer": opt, "lr_scheduler": sched}

    x, y = blobs(n_train, seed=seed, flip=flip, noise=noise)
    xv, yv = blobs(400, seed=seed + 1, noise=noise)
    train = DataLoader(TensorDataset(x, y), batch_size=16, shuffle=True)
    val = DataLoader(TensorDataset(xv, yv), batch_size=100)
    trainer = L.Trainer(max_epochs=epochs, accelerator="cpu", devices=1,
                        logger=CSVLogger(str(root), name=name),
                        callbacks=[LearningRateMonitor("epoch")] if monitor else [],
                        enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, log_every_n_steps=5)
    trainer.fit(Classifier(), train, val)


def lightning_cases(out: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        lightning_logs(Path(tmp), out)


def lightning_logs(work: Path, out: Path) -> None:
    # Two runs of one script in one lightning_logs folder: version_0 stopped early.
    for epochs in (3, 12):
        lightning_run(work, "lightning_logs", epochs=epochs, lr=3e-3, n_train=800, hidden=64,
                      train_key="train_loss", val_key="val_loss", monitor=True)
    for version in ("version_0", "version_1"):
        dest = out / "lightning_healthy" / version
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copy(work / "lightning_logs" / version / "metrics.csv", dest / "metrics.csv")
    lightning_run(work, "overfit", epochs=60, lr=3e-3, n_train=48, hidden=256,
                  train_key="train/loss", val_key="val/loss", flip=0.3, noise=2.5)
    shutil.copy(work / "overfit" / "version_0" / "metrics.csv",
                out / "lightning_overfit_metrics.csv")
    lightning_run(work, "nan", epochs=6, lr=50.0, n_train=800, hidden=64,
                  train_key="train_loss", val_key="val_loss", optimizer="sgd")
    shutil.copy(work / "nan" / "version_0" / "metrics.csv", out / "lightning_nan_metrics.csv")


# --------------------------------------------------------------------------------- Keras


def keras_model(hidden: int, lr: float, depth: int = 2):  # type: ignore[no-untyped-def]
    import keras

    layers = [keras.Input((16,))]
    layers += [keras.layers.Dense(hidden, activation="relu") for _ in range(depth)]
    layers.append(keras.layers.Dense(4))
    model = keras.Sequential(layers)
    model.compile(optimizer=keras.optimizers.Adam(lr),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def keras_cases(out: Path) -> None:
    import keras

    keras.utils.set_random_seed(0)
    x, y = blobs(800)
    xv, yv = blobs(400, seed=1)
    path = out / "keras_appended_training.log"
    path.unlink(missing_ok=True)
    # The same script run twice with append=True: the second run starts again at epoch 0.
    for epochs in (4, 10):
        model = keras_model(64, 1e-3)
        model.fit(x.numpy(), y.numpy(), validation_data=(xv.numpy(), yv.numpy()),
                  epochs=epochs, batch_size=32, verbose=0,
                  callbacks=[keras.callbacks.CSVLogger(str(path), append=True)])
    x, y = blobs(40, flip=0.3, noise=2.5)
    xv, yv = blobs(400, seed=1, noise=2.5)
    model = keras_model(512, 1e-3, depth=3)
    model.fit(x.numpy(), y.numpy(), validation_data=(xv.numpy(), yv.numpy()), epochs=60,
              batch_size=8, verbose=0,
              callbacks=[keras.callbacks.CSVLogger(str(out / "keras_overfit.tsv"),
                                                   separator="\t")])
    x, y = blobs(800, noise=2.0)
    xv, yv = blobs(400, seed=1, noise=2.0)
    model = keras_model(256, 0.2, depth=3)
    # LearningRateScheduler puts `learning_rate` in the logs, so CSVLogger writes it.
    model.fit(x.numpy(), y.numpy(), validation_data=(xv.numpy(), yv.numpy()), epochs=15,
              batch_size=32, verbose=0,
              callbacks=[keras.callbacks.LearningRateScheduler(lambda e, lr: lr),
                         keras.callbacks.CSVLogger(str(out / "keras_lr_too_high.csv"))])


# --------------------------------------------------------------------------- Hugging Face


class TokenTask(torch.utils.data.Dataset):
    """Sequences of tokens; the label says whether token 5 occurs."""

    def __init__(self, n: int, seed: int, flip: float = 0.0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(6, 40, (n, 16), generator=g)
        where = torch.rand(n, generator=g) < 0.5
        self.ids[where, torch.randint(0, 16, (int(where.sum()),), generator=g)] = 5
        self.labels = where.long()
        if flip > 0:
            mask = torch.rand(n, generator=g) < flip
            self.labels = torch.where(mask, 1 - self.labels, self.labels)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[i], "attention_mask": torch.ones(16, dtype=torch.long),
                "labels": self.labels[i]}


def hf_run(out: Path, name: str, *, n_train: int, epochs: int, lr: float, hidden: int,
           evals: dict[str, int] | int, flip: float = 0.0, scheduler: str = "linear",
           warmup_ratio: float = 0.1, max_grad_norm: float = 1.0) -> None:
    from transformers import (
        BertConfig,
        BertForSequenceClassification,
        Trainer,
        TrainingArguments,
        set_seed,
    )

    set_seed(0)
    config = BertConfig(vocab_size=40, hidden_size=hidden, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=2 * hidden,
                        max_position_embeddings=16, num_labels=2)
    model = BertForSequenceClassification(config)
    if isinstance(evals, dict):
        eval_set: object = {k: TokenTask(n, seed=10 + i) for i, (k, n) in
                            enumerate(evals.items())}
    else:
        eval_set = TokenTask(evals, seed=10)
    with tempfile.TemporaryDirectory() as tmp:
        args = TrainingArguments(
            output_dir=tmp, num_train_epochs=epochs, per_device_train_batch_size=16,
            per_device_eval_batch_size=64, learning_rate=lr, lr_scheduler_type=scheduler,
            warmup_steps=int(warmup_ratio * epochs * math.ceil(n_train / 16)),
            logging_steps=5, eval_strategy="epoch",
            save_strategy="no", report_to=[], use_cpu=True, disable_tqdm=True, seed=0,
            max_grad_norm=max_grad_norm)
        trainer = Trainer(model=model, args=args, train_dataset=TokenTask(n_train, 0, flip),
                          eval_dataset=eval_set)  # type: ignore[arg-type]
        trainer.train()
        trainer.state.save_to_json(str(out / name))


def hf_cases(out: Path) -> None:
    hf_run(out, "hf_two_evals_trainer_state.json", n_train=640, epochs=6, lr=1e-3, hidden=32,
           evals={"validation": 200, "test": 200})
    hf_run(out, "hf_overfit_trainer_state.json", n_train=48, epochs=40, lr=1e-3, hidden=64,
           evals=300, flip=0.35, warmup_ratio=0.0, scheduler="constant")


# --------------------------------------------------------------------- plain PyTorch loops


def plain_loop(epochs: int, lr: float, n_train: int = 800, hidden: int = 64,
               lr_at: Callable[[int, int], float] | None = None, bad_step: int | None = None,
               flip: float = 0.0, noise: float = 1.0, sgd: bool = False,
               on_epoch: Callable[[int, float, float, float], None] | None = None,
               on_step: Callable[[int, float, float], None] | None = None) -> None:
    """Train an MLP; `lr_at(epoch, step)` sets the lr; `bad_step` gets scrambled inputs."""
    torch.manual_seed(0)
    x, y = blobs(n_train, flip=flip, noise=noise)
    xv, yv = blobs(400, seed=1, noise=noise)
    model = mlp(hidden=hidden, depth=3)
    opt = (torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9) if sgd
           else torch.optim.Adam(model.parameters(), lr=lr))
    step = 0
    for epoch in range(1, epochs + 1):
        order = torch.randperm(n_train)
        total, count = 0.0, 0
        for i in range(0, n_train, 16):
            if lr_at is not None:
                for group in opt.param_groups:
                    group["lr"] = lr_at(epoch, step)
            idx = order[i:i + 16]
            xb, yb = x[idx], y[idx]
            if step == bad_step:  # a corrupt batch: inputs blown up, labels shuffled
                xb, yb = xb * 30.0, yb.roll(1)
            loss = nn.functional.cross_entropy(model(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total, count, step = total + loss.item() * len(idx), count + len(idx), step + 1
            if on_step is not None:
                on_step(step, loss.item(), opt.param_groups[0]["lr"])
        with torch.no_grad():
            val = nn.functional.cross_entropy(model(xv), yv).item()
        if on_epoch is not None:
            on_epoch(epoch, total / count, val, opt.param_groups[0]["lr"])


def text_cases(out: Path) -> None:
    def writer(path: Path, line: Callable[[int, float, float, float], str]
               ) -> Callable[[int, float, float, float], None]:
        path.write_text("")

        def write(epoch: int, train: float, val: float, lr: float) -> None:
            with path.open("a") as f:
                f.write(line(epoch, train, val, lr) + "\n")
        return write

    n = 30
    bracket = writer(out / "text_bracket_overfit_train.log", lambda e, t, v, lr: (
        f"2024-05-01 10:{e:02d}:00 INFO Epoch [{e:03d}/{n}] TrainLoss={t:.4f} "
        f"TrainAcc=0.0 ValLoss={v:.4f} LR={lr:.2e}"))
    plain_loop(n, 3e-4, noise=2.0,
               lr_at=lambda e, s: 3e-4 if e <= 10 else 1e-4, on_epoch=bracket)
    colon = writer(out / "text_nan_output.txt", lambda e, t, v, lr: (
        f"epoch: {e}, loss: {t:.5f}, val_loss: {v:.5f}, lr: {lr:g}"))
    plain_loop(8, 2.0, sgd=True, on_epoch=colon)
    spaced = writer(out / "text_lr_too_high.log", lambda e, t, v, lr: (
        f"Epoch {e} Loss {t:.4f} Val_Loss {v:.4f} LR {lr:.4g}"))
    plain_loop(15, 0.05, noise=2.0, hidden=256, on_epoch=spaced)

    # The seed story's bug: warmup code writes param_group["lr"] every step and so
    # overwrites the cosine decay; the lr stays at the peak after warmup.
    steps = 800 // 16

    def overwritten(epoch: int, step: int) -> float:
        return 1e-3 * min(1.0, (step + 1) / (2 * steps))

    flat = writer(out / "text_warmup_overwrites_schedule.log", lambda e, t, v, lr: (
        f"Epoch [{e}/20] TrainLoss={t:.4f} ValLoss={v:.4f} LR={lr:.3e}"))
    plain_loop(20, 1e-3, lr_at=overwritten, on_epoch=flat)


def tensorboard_cases(out: Path) -> None:
    from torch.utils.tensorboard import SummaryWriter

    for name, bad in (("tb_spike", 430), ("tb_healthy", None)):
        folder = out / name
        shutil.rmtree(folder, ignore_errors=True)
        writer = SummaryWriter(str(folder))

        def step_log(step: int, loss: float, lr: float, writer: SummaryWriter = writer
                     ) -> None:
            writer.add_scalar("train/loss", loss, step)
            writer.add_scalar("train/lr", lr, step)

        def epoch_log(epoch: int, train: float, val: float, lr: float,
                      writer: SummaryWriter = writer) -> None:
            writer.add_scalar("val/loss", val, epoch * 50)

        plain_loop(12, 1e-3, bad_step=bad, on_step=step_log, on_epoch=epoch_log, noise=3.0,
                   lr_at=lambda e, s: 1e-3 * 0.5 * (1 + math.cos(math.pi * s / 600)))
        writer.close()


CASES = {"lightning": lightning_cases, "keras": keras_cases, "hf": hf_cases,
         "text": text_cases, "tensorboard": tensorboard_cases}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("tests/diagnose/logs"))
    parser.add_argument("--only", nargs="*", choices=sorted(CASES), default=sorted(CASES))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for name in args.only:
        CASES[name](args.out)
    sizes = {str(p.relative_to(args.out)): p.stat().st_size
             for p in sorted(args.out.rglob("*")) if p.is_file()}
    print(json.dumps(sizes, indent=1))


if __name__ == "__main__":
    main()
