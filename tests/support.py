"""Paths and helpers the tests share (a plain module: ``conftest`` names clash across folders)."""

from __future__ import annotations

import dataclasses
import itertools
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cnnbench.records import Target
from cnnbench.reports import leaderboard as lb
from cnnbench.runrecord import RECIPE_DEFAULTS_V3, EpochStats, RunRecord, write_record

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("BENCH_DATA_DIR") or ROOT.parent / "shared" / "datasets")
PLUGIN_FIXTURES = ROOT / "tests" / "plugin_fixtures"
if str(PLUGIN_FIXTURES) not in sys.path:
    sys.path.insert(0, str(PLUGIN_FIXTURES))


BENCH = Path(sys.executable).parent / "bench"


def make_registry(*modules: str, blocked: tuple[str, ...] = ()):
    """A fresh registry with the installed plugins plus ``modules`` (not the cached one)."""
    from cnnbench.registry import Registry, make_plugin_manager

    return Registry(make_plugin_manager(modules, blocked))


def one_line_error(result, *fragments: str) -> str:
    """``result`` (a CliRunner result) failed with exactly one line, no traceback, holding every fragment."""
    assert result.exit_code != 0, result.output
    lines = [line for line in result.output.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


# --- run records: the one factory every test that needs records uses ------------------------------

_run_numbers = itertools.count()
DIGITS = tuple(str(i) for i in range(10))
XEON = {"hostname": "h", "cpu": "Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz", "cpu_count": 2}
H100 = {"hostname": "g", "cpu": "AMD EPYC 7B13", "cpu_count": 16, "gpu": "NVIDIA H100 80GB HBM3"}


def make_record(*, model: str = "mnist_gap", dataset: str = "mnist", seed: int = 0,
                accs: Sequence[float] = (0.98, 0.99, 0.995), params: int = 7_852, lr: float = 0.1,
                seconds: float = 20.0, classes: Sequence[str] = DIGITS, **fields: Any) -> RunRecord:
    """A complete run record of the current schema, shaped as ``cnnbench.training.train`` makes one.

    ``accs`` are the test accuracies per epoch (the last is the final one), ``seconds`` each epoch's time,
    ``classes`` the class names: 100 test images each, all right but 7 of the fourth class taken for the
    sixth (its accuracy 100/107 = 93.46%). ``fields`` set any other ``RunRecord`` field (``machine=H100``,
    ``wall_seconds``, ``launch``, ``weights`` ...); the run id is unique and starts with ``2026``.
    """
    run_id = f"20260101T{next(_run_numbers):06d}Z-{re.sub(r'[^A-Za-z0-9_]', '', model)}-s{seed}-beef"
    epochs = [EpochStats(i + 1, a, train_loss=1.0 / (i + 1), train_acc=a - 0.01, test_loss=0.5 / (i + 1), lr=lr,
                         seconds=seconds, images_per_s=3000.0) for i, a in enumerate(accs)]
    best = max(epochs, key=lambda e: e.test_acc)
    confusion = [[100 if i == j else 7 if (i, j) == (3, 5) else 0 for j in range(len(classes))]
                 for i in range(len(classes))]
    record = RunRecord(
        run_id=run_id, model=model, dataset=dataset, params=params, epochs=epochs, final_test_acc=accs[-1],
        best_test_acc=best.test_acc, best_epoch=best.epoch, epochs_run=len(epochs),
        recipe={"epochs": len(accs), "batch_size": 128, "optimizer": "sgd", "lr": lr, "momentum": 0.9,
                "weight_decay": 0.0, "scheduler": "step", "step_size": 2, "gamma": 0.6, "augmentation": "none",
                "dropout": None, **RECIPE_DEFAULTS_V3},
        seed=seed, device="cpu", created=run_id[:16], command="bench run", source="test",
        per_class_acc={name: row[i] / sum(row) for i, (name, row) in enumerate(zip(classes, confusion, strict=True))},
        confusion=confusion, train_images=60_000 if dataset == "mnist" else 50_000, test_images=10_000,
        total_seconds=seconds * len(accs), images_per_s=3000.0, threads=2, machine=dict(XEON),
        versions={"python": "3.11.7", "torch": "2.14.1"}, git={"commit": "abc", "dirty": False},
    )
    return dataclasses.replace(record, **fields)


def write_records(results_dir: Path, *records: RunRecord) -> list[RunRecord]:
    """Each record as ``<results_dir>/<run_id>.json``, written as ``bench run`` writes it."""
    for record in records:
        write_record(record, results_dir)
    return list(records)


def rows_for(records: Sequence[RunRecord], targets: Sequence[Target],
             sizes: dict[str, tuple[int, int]] | None = None) -> list[lb.Row]:
    """The leaderboard rows of ``records`` against ``targets`` (MNIST's full size by default)."""
    return lb.build_rows(lb.group_records(records), list(targets), sizes or {"mnist": (60_000, 10_000)})
