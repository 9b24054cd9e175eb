"""The closed choices of a run, each written once.

Every option with a fixed set of values has a ``Literal`` type here and the tuple of its values
derived from that type, so the command line (``click.Choice``), the plan's checks and ``bench
speed`` read one list. Adding a value means adding it to the ``Literal``; nothing else lists it.
"""

from __future__ import annotations

from typing import Literal, get_args

Optimizer = Literal["sgd", "adam"]
Scheduler = Literal["none", "step", "onecycle"]
Precision = Literal["fp32", "bf16"]
CompileMode = Literal["none", "default", "reduce-overhead", "max-autotune"]
TTA = Literal["none", "flip"]
AugmentationKind = Literal["batch", "sample"]
RunStatus = Literal["complete", "stopped", "diverged"]
Split = Literal["train", "val", "test"]
BoardFormat = Literal["table", "markdown", "csv", "json", "html"]

OPTIMIZERS: tuple[Optimizer, ...] = get_args(Optimizer)
SCHEDULERS: tuple[Scheduler, ...] = get_args(Scheduler)
PRECISIONS: tuple[Precision, ...] = get_args(Precision)
COMPILE_MODES: tuple[CompileMode, ...] = get_args(CompileMode)
TTAS: tuple[TTA, ...] = get_args(TTA)
AUGMENTATION_KINDS: tuple[AugmentationKind, ...] = get_args(AugmentationKind)
RUN_STATUSES: tuple[RunStatus, ...] = get_args(RunStatus)
BOARD_FORMATS: tuple[BoardFormat, ...] = get_args(BoardFormat)

__all__ = [
    "AUGMENTATION_KINDS", "BOARD_FORMATS", "COMPILE_MODES", "OPTIMIZERS", "PRECISIONS", "RUN_STATUSES",
    "SCHEDULERS", "TTAS",
    "AugmentationKind", "BoardFormat", "CompileMode", "Optimizer", "Precision", "RunStatus", "Scheduler",
    "Split", "TTA",
]
