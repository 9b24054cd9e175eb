"""What a finished run leaves: its record (what was run, what every epoch measured, and where) and its weights."""

from __future__ import annotations

import hashlib
import io
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cnnbench.errors import PluginError
from cnnbench.runrecord import EpochStats, RunInfo, RunRecord, write_record
from cnnbench.training import provenance
from cnnbench.training.checkpoint import on_cpu
from cnnbench.training.fingerprint import dataset_sha256, weights_sha256
from cnnbench.training.plan import RunPlan


def build_record(
    plan: RunPlan, run: RunInfo, epochs: list[EpochStats], confusion: Any, splits: dict[str, Any],
    elapsed: float, stopped_by: str | None, git: dict[str, Any], status: str = "complete",
    wall: float | None = None,
) -> RunRecord:
    """The run record: what was run, what every epoch measured, and where (machine, versions, commit).

    ``elapsed`` sums the epochs (training and evaluation); ``wall`` runs from loading the data to the
    final evaluation, model building and compilation included: the clock a target's time budget checks."""
    status = "complete" if status == "running" else status
    best = max(epochs, key=lambda e: e.test_acc)
    per_class = (confusion.diag().float() / confusion.sum(1).clamp(min=1)).tolist()
    names = plan.dataset.class_names or tuple(str(i) for i in range(plan.dataset.num_classes))
    return RunRecord(
        **asdict(run), created=run.run_id.split("-", 1)[0], command=provenance.command_line(),
        source=plan.model.source, epochs=epochs, epochs_run=len(epochs), final_test_acc=epochs[-1].test_acc,
        best_test_acc=best.test_acc, best_epoch=best.epoch, per_class_acc=dict(zip(names, per_class, strict=False)),
        confusion=confusion.tolist(), train_images=len(splits["train"][1]), test_images=len(splits["test"][1]),
        total_seconds=round(elapsed, 2), images_per_s=round(float(np.median([e.images_per_s or 0 for e in epochs])), 1),
        stopped_by=stopped_by, threads=torch.get_num_threads(), machine=provenance.machine(torch.device(plan.device)),
        versions=provenance.library_versions(), git=git, plugins=plan.plugins, status=status,
        resumed_at=list(plan.resumed_at), launch=plan.launch,
        wall_seconds=round(wall, 2) if wall is not None else None, fast_path=fast_path(plan),
        val_images=len(splits["val"][1]) if "val" in splits else None,
        weights=f"{run.run_id}.pt" if plan.save_weights and status != "diverged" else None,
        fingerprints={
            "data": dataset_sha256(plan.dataset, plan.data_dir),
            "environment": provenance.environment(plan.device, torch.get_num_threads()),
        },
    )


def fast_path(plan: RunPlan) -> dict[str, Any]:
    """The speed options a run used (part of its configuration in the leaderboard)."""
    return {
        "channels_last": plan.channels_last, "compile": plan.compile,
        "cudnn_benchmark": torch.device(plan.device).type == "cuda",
    }


def write_run(plan: RunPlan, record: RunRecord, model: torch.nn.Module) -> Path:
    """The record and, when it names them, the final weights (``runrecord.write_record``)."""
    weights = None
    if record.weights:
        state = on_cpu(model.state_dict())
        buffer = io.BytesIO()
        torch.save(state, buffer)
        weights = buffer.getvalue()
        record.fingerprints["weights_sha256"] = weights_sha256(state)
        record.fingerprints["weights_file_sha256"] = hashlib.sha256(weights).hexdigest()
    try:
        return write_record(record, plan.results_dir, weights)
    except (TypeError, ValueError) as exc:  # raised before anything is written
        raise PluginError(f"a cnnbench_run_end hook put a value into the record that is not JSON ({exc})") from None
