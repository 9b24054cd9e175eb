"""``bench speed``: what a training step costs and how far it is from the machine's limit.

- ``timing``: img/s, step time, FLOPs and peak memory of one training and one evaluation step,
  and the harness's own figure for the same settings (from the run records);
- ``peak``: the machine's matrix-product peak and copy bandwidth, measured once and cached;
- ``profile``: the step's operators by own time and the bytes its unfused operators move;
- ``options``: every fast-path option of a model timed side by side.

Nothing here imports torch at import time: ``bench --help`` loads the command that uses it.
"""

from __future__ import annotations

from cnnbench.training.speed.timing import (
    MAX_AUTO_STEPS,
    HarnessFigure,
    PhaseTiming,
    SpeedResult,
    harness_figure,
    matches,
    measure_speed,
    record_setting,
    render,
)

__all__ = [
    "MAX_AUTO_STEPS", "HarnessFigure", "PhaseTiming", "SpeedResult", "harness_figure", "matches", "measure_speed",
    "record_setting", "render",
]
