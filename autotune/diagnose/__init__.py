"""Root-cause findings for a diverged or suspicious run: our run directories and foreign logs.

`diagnose` reads a metrics history (one record per epoch, or per logging step) and, when it
is known, the intended learning-rate schedule, and explains what went wrong the way an
experienced engineer would: a schedule that does not do what was meant, a learning rate too
high for the model, a non-finite loss, a spike, overfitting, a loss floor raised by label
smoothing. It judges with the supervisor's own detectors (`autotune.detect`). Every finding
carries the numbers it rests on and a concrete fix; the findings come ordered by how likely
each is the cause.

Modules: `readers` (one per log format), `timeline` (points and lines of training),
`schedule` (the learning-rate schedule check), `losses`, `spikes` and `validation` (the
loss checks), `recoveries` (a run's events), `findings` and `prose` (the words), `judge`
(`diagnose`), `target` (`diagnose_target`, what the CLI calls) and `thresholds` (diagnose's
own thresholds, beside the detectors').
"""

from autotune.diagnose.findings import Finding, FindingCode, Severity, render_source, render_text
from autotune.diagnose.intended import Intended, smoothing_floor
from autotune.diagnose.judge import diagnose
from autotune.diagnose.readers import Log, RunRecord, read_log, read_run
from autotune.diagnose.target import Report, diagnose_report, diagnose_target, parse_columns

__all__ = [
    "Finding",
    "FindingCode",
    "Intended",
    "Log",
    "Report",
    "RunRecord",
    "Severity",
    "diagnose",
    "diagnose_report",
    "diagnose_target",
    "parse_columns",
    "read_log",
    "read_run",
    "render_source",
    "render_text",
    "smoothing_floor",
]
