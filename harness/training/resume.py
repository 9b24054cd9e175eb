"""``bench resume`` and ``bench runs``: continue an interrupted run, list finished and interrupted runs.

A seed of a fused run (its checkpoint says ``fused``) continues fused, together with every other seed
of that run whose checkpoint waits at the same epoch: the seeds share random streams (dropout masks
are drawn for all of them at once), so only the fused computation continues their trajectories exactly.
"""

from __future__ import annotations

import dataclasses
from functools import partial
from pathlib import Path
from typing import Any

from tabulate import tabulate

from cnnbench.errors import RecordError, UsageError
from cnnbench.formatting import pct
from cnnbench.registry import Registry, get_registry
from cnnbench.runrecord import RunRecord, iter_records
from cnnbench.training.checkpoint import SUFFIX, incomplete_runs
from cnnbench.training.fused import resume_fused
from cnnbench.training.plan import Overrides, RunPlan, make_plan
from cnnbench.training.runner import blame_plugins
from cnnbench.training.train import train


def find_checkpoint(ref: str, results_dir: Path) -> dict[str, Any]:
    """The checkpoint (its loaded state) of run ``ref``, an id or a unique prefix, in ``results_dir``."""
    pending = {p.name[: -len(SUFFIX)]: state for p, state in incomplete_runs(results_dir)}
    ids = list(pending)
    matches = [i for i in ids if i == ref] or [i for i in ids if i.startswith(ref)]
    if (results_dir / f"{ref}.json").exists():
        raise UsageError(f"run {ref} in {results_dir} is complete; nothing to resume")
    if not matches:
        listed = ", ".join(ids) or "(none)"
        raise UsageError(f"no interrupted run {ref!r} in {results_dir}; interrupted runs: {listed}")
    if len(matches) > 1:
        raise UsageError(f"run {ref!r} is ambiguous in {results_dir}; it matches: {', '.join(matches)}")
    state = pending[matches[0]]
    if state.get("running"):
        raise UsageError(f"run {matches[0]} is still running in another process; it cannot be resumed twice")
    if "error" in state:
        raise RecordError(state["error"])
    return state


def resume_run(ref: str, results_dir: str | Path, data_dir: str | None, progress: bool) -> RunRecord:
    """Continue the interrupted run ``ref`` (an id or a unique prefix) in ``results_dir``."""
    return resume_state(find_checkpoint(ref, Path(results_dir)), results_dir, data_dir, progress)


def resume_state(state: dict[str, Any], results_dir: str | Path, data_dir: str | None, progress: bool) -> RunRecord:
    """Rebuild a run's plan from its loaded checkpoint ``state`` and train the remaining epochs (with the
    other waiting seeds of its fused run, when it is one); the record of ``state``'s run."""
    registry = get_registry(state["plugin_modules"])
    plan, hooks = resumed_plan(state, registry, Path(results_dir), data_dir, progress), registry.hook
    if state.get("fused"):
        group = fused_group(state, Path(results_dir))
        where = f"fused seeds {', '.join(str(s['seed']) for s in group)}"
        results = blame_plugins(partial(resume_fused, plan, group, hooks), hooks, where)
        return next(record for record, _ in results if record.run_id == state["run"]["run_id"])
    return blame_plugins(partial(train, plan, state["seed"], hooks, resume=state), hooks, f"seed {state['seed']}")[0]


def resumed_plan(state: dict[str, Any], registry: Registry, results_dir: Path, data_dir: str | None,
                 progress: bool) -> RunPlan:
    """The plan the checkpoint's run was made with, as the plugins define it now (its recipe unchanged)."""
    saved = Overrides.from_json(state["overrides"])
    overrides = dataclasses.replace(saved, results_dir=results_dir, data_dir=data_dir or saved.data_dir,
                                    progress=progress)
    plan = make_plan(registry, state["model_name"], overrides)
    if dataclasses.asdict(plan.recipe) != state["run"]["recipe"]:
        raise RecordError(f"model {plan.model.name!r}'s recipe changed since the run started; it cannot be resumed")
    return dataclasses.replace(plan, resumed_at=(*state["resumed_at"], len(state["epochs"])))


def fused_group(state: dict[str, Any], results_dir: Path) -> list[dict[str, Any]]:
    """``state`` and the other seeds of its fused run that wait here at the same epoch (not running)."""
    group = [other for _, other in incomplete_runs(results_dir) if in_group(other, state)]
    if not any(other["run"]["run_id"] == state["run"]["run_id"] for other in group):
        group.append(state)
    return sorted(group, key=lambda other: other["fused"]["index"])


def in_group(other: dict[str, Any], state: dict[str, Any]) -> bool:
    fused = other.get("fused")
    return (fused is not None and not other.get("running") and fused["run_ids"] == state["fused"]["run_ids"]
            and fused["seeds"] == state["fused"]["seeds"] and len(other["epochs"]) == len(state["epochs"]))


def runs_table(results_dir: str | Path, incomplete_only: bool = False) -> str:
    """Finished runs (unless ``incomplete_only``) and interrupted ones with the command that resumes each."""
    root = Path(results_dir)
    parts = []
    if not incomplete_only:
        rows = [_finished_row(r.data) for r in iter_records(root)]
        parts.append(tabulate(rows, headers=["run", "model", "seed", "status", "epochs", "final", "best"])
                     if rows else f"no finished runs in {root}")
    pending = incomplete_runs(root)
    if pending:
        rows = [_pending_row(path, state, root) for path, state in pending]
        parts.append("interrupted:\n" + tabulate(rows, headers=["run", "model", "seed", "epochs done", "resume with"]))
    elif incomplete_only:
        parts.append(f"no interrupted runs in {root}")
    return "\n\n".join(parts)


def _finished_row(r: RunRecord) -> list[Any]:
    epochs = f"{r.n_epochs}/{r.recipe.get('epochs', '?')}"
    return [r.run_id, r.model, r.seed, r.status, epochs, pct(r.final_test_acc), pct(r.best_test_acc)]


def _pending_row(path: Path, state: dict[str, Any], root: Path) -> list[Any]:
    run_id = path.name[: -len(SUFFIX)]
    if "error" in state:
        return [run_id, "?", "?", "?", f"(unreadable checkpoint {path.name}; `bench resume {run_id}` says why)"]
    total = state["run"]["recipe"].get("epochs", "?")
    command = "(running now)" if state.get("running") else f"bench resume {run_id} --results-dir {root}"
    if state.get("fused") and not state.get("running"):
        command += " (with its fused seeds)"
    return [run_id, state["model_name"], state["seed"], f"{len(state['epochs'])}/{total}", command]
