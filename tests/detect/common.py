"""What the detector tests share."""

from __future__ import annotations

import math
from typing import Any

from autotune.detect import DetectorConfig

NAN, INF = math.nan, math.inf
CFG = DetectorConfig()


def records(trains: list[float], vals: list[float]) -> list[dict[str, Any]]:
    """Epoch records 1..n with these training and validation losses."""
    return [{"epoch": i + 1, "train_loss": t, "val_loss": v}
            for i, (t, v) in enumerate(zip(trains, vals, strict=True))]
