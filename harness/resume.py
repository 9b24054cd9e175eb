"""``bench resume`` and ``bench runs``: continue an interrupted run, list finished and interrupted runs."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from .checkpoint import SUFFIX, incomplete_runs, load_checkpoint
from .errors import BenchError
from .formatting import pct
from .runrecord import RunRecord, iter_records


def find_checkpoint(ref: str, results_dir: Path) -> dict[str, Any]:
    """The checkpoint (its loaded state) of run ``ref``, an id or a unique prefix, in ``results_dir``."""
    pending = {p.name[: -len(SUFFIX)]: state for p, state in incomplete_runs(results_dir)}
    ids = list(pending)
    matches = [i for i in ids if i == ref] or [i for i in ids if i.startswith(ref)]
    if (results_dir / f"{ref}.json").exists():
        raise BenchError(f"run {ref} in {results_dir} is complete; nothing to resume")
    if not matches:
        listed = ", ".join(ids) or "(none)"
        raise BenchError(f"no interrupted run {ref!r} in {results_dir}; interrupted runs: {listed}")
    if len(matches) > 1:
        raise BenchError(f"run {ref!r} is ambiguous in {results_dir}; it matches: {', '.join(matches)}")
    state = pending[matches[0]]
    if state.get("running"):
        raise BenchError(f"run {matches[0]} is still running in another process; it cannot be resumed twice")
    if "run" not in state:  # unreadable: load it again for the one-line error that says why
        load_checkpoint(results_dir / f"{matches[0]}{SUFFIX}")
    return state


def resume_run(ref: str, results_dir: str | Path, data_dir: str | None, progress: bool) -> RunRecord:
    """Continue the interrupted run ``ref`` (an id or a unique prefix) in ``results_dir``."""
    return resume_state(find_checkpoint(ref, Path(results_dir)), results_dir, data_dir, progress)


def resume_state(state: dict[str, Any], results_dir: str | Path, data_dir: str | None, progress: bool) -> RunRecord:
    """Rebuild a run's plan from its loaded checkpoint ``state`` and train the remaining epochs."""
    from .plan import Overrides, make_plan
    from .registry import get_registry
    from .train import train

    results = Path(results_dir)
    saved = Overrides.from_json(state["overrides"])
    overrides = dataclasses.replace(
        saved, results_dir=results, data_dir=data_dir or saved.data_dir, progress=progress
    )
    registry = get_registry(state["plugin_modules"])
    plan = make_plan(registry, state["model_name"], overrides)
    if dataclasses.asdict(plan.recipe) != state["run"]["recipe"]:
        raise BenchError(f"model {plan.model.name!r}'s recipe changed since the run started; it cannot be resumed")
    done = len(state["epochs"])
    plan = dataclasses.replace(plan, resumed_at=(*state["resumed_at"], done))
    return train(plan, state["seed"], registry.hook, resume=state)[0]


def runs_table(results_dir: str | Path, incomplete_only: bool = False) -> str:
    """Finished runs (unless ``incomplete_only``) and interrupted ones with the command that resumes each."""
    from tabulate import tabulate

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
    if "run" not in state:
        return [run_id, "?", "?", "?", f"(unreadable checkpoint {path.name})"]
    total = state["run"]["recipe"].get("epochs", "?")
    command = "(running now)" if state.get("running") else f"bench resume {run_id} --results-dir {root}"
    return [run_id, state["model_name"], state["seed"], f"{len(state['epochs'])}/{total}", command]
