"""Records of a log of any length in bounded memory: consecutive rows pooled into bins.

A reader feeds rows to a `Pool` in blocks of numpy columns (our column names). While the
log has at most `MAX_RECORDS` rows each row is its own record, exactly as written. Past
that, neighbouring bins are merged in pairs whenever there are more than twice
`MAX_RECORDS` of them, so what is held stays between `MAX_RECORDS` and twice that,
whatever the log's length, and the time stays linear in the rows.

A pooled record is what a log written every k steps would hold: the mean of the finite
training (and validation) losses of its rows, the learning rate of its last row and the
largest gradient norm. A non-finite value is never averaged away: a bin with a NaN or
infinite loss or gradient norm carries the first such value, and the epoch and step of
the row it came from, so that a finding names the exact step. Bins never straddle a point
where the epoch or step goes back (a rollback, an appended second run), so each line of
training stays its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["KEYS", "MAX_RECORDS", "ROW_KEYS", "Pool"]

MAX_RECORDS = 10_000
"""Up to this many rows a log is judged row by row; past it, on pooled rows."""

ROW_KEYS = ("train_loss", "val_loss", "lr", "grad_norm")
"""A row with none of these is left out (a banner, a row of other metrics only)."""
KEYS = ROW_KEYS  # accuracy columns are recognised (and shown) but not judged
_MEAN = ("train_loss", "val_loss")  # pooled as the mean of the finite values


@dataclass
class _Bins:
    """Per bin: row count, position, and per column the aggregates that merge exactly."""

    rows: np.ndarray  # int64
    segment: np.ndarray  # int64: the line of training
    epoch: np.ndarray  # of the last row, or of the row of the first non-finite value
    step: np.ndarray
    bad_at: np.ndarray  # bool: epoch/step point at a non-finite value
    total: dict[str, np.ndarray] = field(default_factory=dict)  # sum of finite (mean keys)
    count: dict[str, np.ndarray] = field(default_factory=dict)  # finite values
    value: dict[str, np.ndarray] = field(default_factory=dict)  # last (lr) or max (grad)
    has: dict[str, np.ndarray] = field(default_factory=dict)  # a present value
    bad: dict[str, np.ndarray] = field(default_factory=dict)  # first non-finite, else 0

    def __len__(self) -> int:
        return len(self.rows)


def _concat(parts: list[_Bins]) -> _Bins:
    first = parts[0]
    cat = np.concatenate
    return _Bins(cat([p.rows for p in parts]), cat([p.segment for p in parts]),
                 cat([p.epoch for p in parts]), cat([p.step for p in parts]),
                 cat([p.bad_at for p in parts]),
                 {k: cat([p.total[k] for p in parts]) for k in first.total},
                 {k: cat([p.count[k] for p in parts]) for k in first.count},
                 {k: cat([p.value[k] for p in parts]) for k in first.value},
                 {k: cat([p.has[k] for p in parts]) for k in first.has},
                 {k: cat([p.bad[k] for p in parts]) for k in first.bad})


class Pool:
    """Rows in, at most 2 x `limit` records out (see the module docstring)."""

    def __init__(self, limit: int = MAX_RECORDS) -> None:
        if limit < 1:
            raise ValueError(f"limit must be positive but got {limit}.")
        self.limit = limit
        self.rows = 0
        self._parts: list[_Bins] = []
        self._held = 0
        self._width = 1  # rows per bin for new rows
        self._segment = 0
        self._last_key: float | None = None
        self.has_epoch = False
        self.has_step = False

    @property
    def pooled(self) -> bool:
        return self._width > 1

    def add(self, columns: dict[str, np.ndarray], n: int) -> None:
        """Add `n` rows: arrays of length n for `epoch`, `step` and any of KEYS (NaN where a
        value is missing, with `has_<key>` bool arrays telling a missing value from NaN)."""
        if n == 0:
            return
        self.has_epoch = self.has_epoch or "epoch" in columns
        self.has_step = self.has_step or "step" in columns
        epoch = columns.get("epoch", np.full(n, np.nan))
        step = columns.get("step", np.full(n, np.nan))
        key = np.where(np.isfinite(step), step, epoch)  # where the log is
        previous = np.concatenate([[np.nan if self._last_key is None else self._last_key],
                                   key[:-1]])
        back = key < previous  # NaN compares False
        segment = self._segment + np.cumsum(back)
        self._segment = int(segment[-1])
        self._last_key = float(key[-1])
        starts = np.flatnonzero((np.arange(n) % self._width == 0) | back
                                | np.r_[True, segment[1:] != segment[:-1]])
        self._parts.append(self._bin(columns, epoch, step, segment, starts, n))
        self._held += len(self._parts[-1])
        self.rows += n
        while self._held > 2 * self.limit:
            merged = self._merge_pairs(_concat(self._parts))
            self._parts, self._held = [merged], len(merged)
            self._width *= 2

    def _bin(self, columns: dict[str, np.ndarray], epoch: np.ndarray, step: np.ndarray,
             segment: np.ndarray, starts: np.ndarray, n: int) -> _Bins:
        ends = np.r_[starts[1:], n] - 1
        index = np.arange(n)
        big = np.iinfo(np.int64).max
        first_bad = np.full(len(starts), big)
        out = _Bins(np.diff(np.r_[starts, n]), segment[starts], epoch[ends].copy(),
                    step[ends].copy(), np.zeros(len(starts), bool))
        for k in KEYS:
            values = columns.get(k)
            if values is None:
                values = np.full(n, np.nan)
                has = np.zeros(n, bool)
            else:
                has = columns.get(f"has_{k}", np.isfinite(values))
            finite = has & np.isfinite(values)
            bad = has & ~finite
            bad_index = np.minimum.reduceat(np.where(bad, index, big), starts)
            out.bad[k] = np.where(bad_index < big, values[np.minimum(bad_index, n - 1)], 0.0)
            out.has[k] = np.add.reduceat(has, starts) > 0
            if k in _MEAN:
                out.total[k] = np.add.reduceat(np.where(finite, values, 0.0), starts)
                out.count[k] = np.add.reduceat(finite.astype(np.int64), starts)
            elif k == "lr":
                last = np.maximum.reduceat(np.where(has, index, -1), starts)
                out.value[k] = np.where(last >= 0, values[np.maximum(last, 0)], np.nan)
            else:
                out.value[k] = np.fmax.reduceat(np.where(finite, values, np.nan), starts)
            if k != "lr":  # a non-finite lr is not a finding of its own
                first_bad = np.minimum(first_bad, bad_index)
        moved = first_bad < big
        out.epoch[moved] = epoch[first_bad[moved]]
        out.step[moved] = step[first_bad[moved]]
        out.bad_at = moved
        return out

    @staticmethod
    def _merge_pairs(b: _Bins) -> _Bins:
        """Merge bins 2i and 2i+1 of one segment; a bin whose partner is of another
        segment (or that has none) stays as it is."""
        n = len(b)
        left = np.arange(0, n - 1, 2)
        join = b.segment[left] == b.segment[left + 1]
        # Group starts: every bin starts a group except the right half of a joined pair.
        right_joined = np.zeros(n, bool)
        right_joined[left[join] + 1] = True
        starts = np.flatnonzero(~right_joined)
        ends = np.r_[starts[1:], n] - 1  # the right bin of a pair, else the bin itself
        bad_left = b.bad_at[starts]
        pick = np.where(bad_left, starts, ends)  # position: the first non-finite, else last
        out = _Bins(np.add.reduceat(b.rows, starts), b.segment[starts], b.epoch[pick],
                    b.step[pick], b.bad_at[starts] | b.bad_at[ends])
        for k in KEYS:
            has_bad_left = b.bad[k][starts] != 0
            out.bad[k] = np.where(has_bad_left, b.bad[k][starts], b.bad[k][ends])
            out.has[k] = b.has[k][starts] | b.has[k][ends]
            if k in _MEAN:
                out.total[k] = np.add.reduceat(b.total[k], starts)
                out.count[k] = np.add.reduceat(b.count[k], starts)
            elif k == "lr":
                out.value[k] = np.where(b.has[k][ends] & ~np.isnan(b.value[k][ends]),
                                        b.value[k][ends], b.value[k][starts])
            else:
                out.value[k] = np.fmax(b.value[k][starts], b.value[k][ends])
        return out

    def records(self) -> list[dict[str, float]]:
        """The records, oldest first: our column names, a key only where a value is."""
        if not self._parts:
            return []
        b = _concat(self._parts)
        cols: dict[str, np.ndarray] = {}
        present: dict[str, np.ndarray] = {}
        for k in KEYS:
            bad = b.bad[k] != 0
            if k in _MEAN:
                with np.errstate(invalid="ignore", divide="ignore"):
                    mean = b.total[k] / b.count[k]
                cols[k] = np.where(bad, b.bad[k], mean)
                present[k] = b.has[k] & (bad | (b.count[k] > 0))
            else:
                cols[k] = np.where(bad, b.bad[k], b.value[k])
                present[k] = b.has[k] & (bad | ~np.isnan(b.value[k]))
        names = (["epoch"] if self.has_epoch else []) + (["step"] if self.has_step else [])
        position = {"epoch": b.epoch, "step": b.step}
        out: list[dict[str, float]] = []
        lists = {k: cols[k].tolist() for k in KEYS}
        has = {k: present[k].tolist() for k in KEYS}
        where = {k: position[k].tolist() for k in names}
        rows = b.rows.tolist()
        for i in range(len(b)):
            record = {k: where[k][i] for k in names if where[k][i] == where[k][i]}
            record.update({k: lists[k][i] for k in KEYS if has[k][i]})
            if self.pooled:
                record["rows"] = float(rows[i])
            out.append(record)
        return out
