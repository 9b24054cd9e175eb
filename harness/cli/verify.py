"""``bench verify``, ``bench check`` and ``bench env``: results anyone can re-check.

Light at import time (click only); torch is imported when a run is trained again.
"""

from __future__ import annotations

import fnmatch
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import click

from cnnbench.cli.sweep import make_launcher
from cnnbench.deploy import store as deploy_store
from cnnbench.errors import BenchError, UsageError, on_sigterm
from cnnbench.records import Job, LaunchOptions
from cnnbench.registry import registry_from
from cnnbench.runrecord import RunRecord, is_record_file, read_record
from cnnbench.sweep import grid as sw
from cnnbench.training import provenance
from cnnbench.training.fingerprint import weights_sha256
from cnnbench.verify.check import check_results
from cnnbench.verify.replay import load_weights, verify_run
from cnnbench.verify.store import append_verification, read_verifications, verification_path

RESULTS_DIR = click.option("--results-dir", type=click.Path(file_okay=False), default="results", show_default=True)


def select_runs(refs: tuple[str, ...], results_dir: Path) -> list[tuple[Path, RunRecord]]:
    """Records named by id, unique id prefix, shell pattern (``'*mnist_fast*'``), model name (all of its
    runs) or path; each once."""
    files = sorted(p for p in results_dir.glob("*.json") if is_record_file(p)) if results_dir.is_dir() else []
    ids = [p.stem for p in files]
    chosen: dict[str, Path] = {}
    for ref in refs:
        as_path = Path(ref)
        if as_path.suffix == ".json" and as_path.is_file():
            chosen.setdefault(as_path.stem, as_path)
            continue
        if any(c in ref for c in "*?["):
            matches = fnmatch.filter(ids, ref)
        else:
            matches = [i for i in ids if i == ref] or [i for i in ids if i.startswith(ref)]
            by_model = [i for i in ids if f"-{ref}-s" in i]  # run ids are <time>-<model>-s<seed>-<tag>
            if not matches and by_model:
                matches = by_model
            elif len(matches) > 1:
                raise UsageError(f"run {ref!r} is ambiguous in {results_dir}; it matches {len(matches)} runs "
                                 f"({', '.join(matches[:3])} ...)")
        if not matches:
            raise UsageError(f"no run matches {ref!r} in {results_dir} ({len(ids)} runs there)")
        for run_id in matches:
            chosen.setdefault(run_id, results_dir / f"{run_id}.json")
    selected = []
    for path in chosen.values():
        try:
            selected.append((path, read_record(path)))
        except ValueError as exc:
            raise BenchError(f"{path}: not a readable run record ({exc})") from None
    return selected


def verdict_line(verification: dict[str, Any]) -> str:
    env = verification["environment"]["differences"]
    where = "same environment" if not env else f"environment differs: {'; '.join(env[:4])}"
    weights = verification.get("weights") or {}
    weights_text = ""
    if weights:
        match = weights.get("match")
        weights_text = ", weights " + ("identical" if match else "differ" if match is False else "not compared")
    return (f"{verification['run_id']}: {verification['mode']}, {verification['numbers_compared']} numbers"
            f"{weights_text}: {verification['verdict']} ({where}; {verification['seconds']:.0f} s)")


def difference_rows(verification: dict[str, Any]) -> list[list[Any]]:
    def show(value: Any) -> str:
        return "-" if value is None else f"{value:.6g}"

    return [[d["epoch"], d["field"], show(d["recorded"]), show(d["replayed"])] for d in verification["differences"]]


@click.command()
@click.argument("runs", nargs=-1, required=True, metavar="RUN...")
@click.option("--epochs", type=click.IntRange(min=1, max=10_000),
              help="Train and compare the first K epochs [2, or fewer when the run had fewer].")
@click.option("--full", is_flag=True,
              help="Train to the end; also compare the final accuracies and the weights' SHA-256.")
@RESULTS_DIR
@click.option("--data-dir", type=click.Path(file_okay=False), help="Dataset folder [$BENCH_DATA_DIR or ./data].")
@click.option("--progress/--no-progress", default=False, help="Progress bars while training.")
@click.option("--launcher", help="Run the verifications as jobs of this sweep launcher (one that works in the "
                                 "results folder itself: local), --jobs at a time.")
@click.option("--jobs", type=click.IntRange(min=1, max=1024), help="With --launcher: at most this many at once.")
@click.pass_context
def verify(ctx: click.Context, runs: tuple[str, ...], epochs: int | None, full: bool, results_dir: str,
           data_dir: str | None, progress: bool, launcher: str | None, jobs: int | None) -> None:
    """Train each RUN (id, prefix, pattern, model name or path) again from its record and compare every number.

    On the record's own environment (CPU model and flags, library versions, threads, device, data
    files) the numbers must match exactly; elsewhere within a stated tolerance. The verdict is written
    beside the record as RUN.verify.json; the record is never changed. Exit 1 when a run is not reproduced.
    """
    from tabulate import tabulate  # lazy: tabulate

    if full and epochs:
        raise UsageError("--full trains every epoch; leave out --epochs")
    if jobs and not launcher:
        raise UsageError("--jobs goes with --launcher")
    selected = select_runs(runs, Path(results_dir))
    signal.signal(signal.SIGTERM, on_sigterm)
    if launcher:
        verify_through(ctx, launcher, selected, None if full else (epochs or 2), results_dir, data_dir, jobs)
        return
    failed = 0
    for path, record in selected:
        verification = verify_run(record, path, data_dir, None if full else (epochs or 2), progress)
        written = append_verification(path.parent, record.run_id, verification)
        click.echo(verdict_line(verification))
        if verification["differences"]:
            click.echo(tabulate(difference_rows(verification), headers=["epoch", "number", "recorded", "replayed"]))
        if verification["tolerance"]:
            largest = ", ".join(f"{k} {v:.2g}" for k, v in verification["largest_differences"].items())
            click.echo(f"  largest differences: {largest}")
            tol = verification["tolerance"]
            click.echo(f"  tolerance: accuracies within {tol['acc_abs'] * 100:g} points, losses within "
                       f"{tol['loss_rel'] * 100:g}% (or {tol['loss_abs']:g}), lr within {tol['lr_rel']:g} relative")
        click.echo(f"  written to {written}")
        failed += verification["verdict"] == "not reproduced"
    if failed:
        raise BenchError(f"{failed} of {len(selected)} runs not reproduced")


def verify_through(ctx: click.Context, name: str, selected: list[tuple[Path, RunRecord]], epochs: int | None,
                   results_dir: str, data_dir: str | None, jobs: int | None) -> None:
    """The verifications as jobs of launcher ``name`` (claimed like sweep jobs: never two at once)."""
    registry = registry_from(ctx)
    stamp = f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"
    settings = LaunchOptions(results_dir=results_dir, log_dir=str(Path("bench-out") / "verify" / stamp),
                             data_dir=data_dir, jobs=jobs, progress=False)
    chosen = make_launcher(registry, name, settings, {})
    if not chosen.shares_results_dir:
        raise UsageError(f"--launcher {name}: its jobs do not run in the results folder itself, where a "
                         "verification reads the record and writes its verdict; use --launcher local")
    mode = "full" if epochs is None else f"epochs{epochs}"
    work = [Job(f"verify-{record.run_id}-{mode}", record.model, record.seed or 0,
                {"run_id": record.run_id, "epochs": epochs}, tuple(registry.pm.explicit), task="verify")
            for _, record in selected]
    outcome = sw.run_sweep(chosen, name, work, settings)
    for path, record in selected:
        done = read_verifications(verification_path(path.parent, record.run_id))
        if done:
            click.echo(verdict_line(done[-1]))
    if outcome.failed or outcome.elsewhere:
        raise BenchError(f"{len(outcome.failed)} of {len(work)} runs not reproduced or failed "
                         f"({len(outcome.elsewhere)} running elsewhere); logs in {settings.log_dir}")


@click.command()
@RESULTS_DIR
@click.option("--weights/--no-weights", "check_weights", default=True,
              help="Also check fingerprinted weights files against their digest (loads each).")
def check(results_dir: str, check_weights: bool) -> None:
    """Validate every record in the results folder: schema, fingerprints, internal consistency, no job
    claimed twice. Names each bad record; exit 1 when any is bad."""
    digest = None
    if check_weights:
        def digest(path: Path) -> str:
            return weights_sha256(load_weights(path))

    result = check_results(Path(results_dir), digest)
    folder = Path(results_dir)
    run_ids = {p.stem for p in folder.glob("*.json") if is_record_file(p)} if folder.is_dir() else set()
    deployments, deploy_problems = deploy_store.check_deployments(folder, run_ids) if folder.is_dir() else (0, [])
    problems = result.problems + deploy_problems
    for problem in problems:
        click.echo(f"bad: {problem}", err=True)
    old = len(result.not_fingerprinted)
    click.echo(f"{result.checked} records checked in {results_dir}: {result.fingerprinted} fingerprinted, "
               f"{old} not fingerprinted (older schema); {deployments} deployments; {len(problems)} problems")
    if problems:
        raise BenchError(f"{len(problems)} problems in {results_dir}")


@click.command()
@click.option("--device", default="cpu", show_default=True, help="The device whose environment to show.")
@click.option("--threads", type=click.IntRange(min=1, max=1024), help="torch CPU threads [all cores].")
@click.option("--json", "as_json", is_flag=True, help="JSON, as a record stores it.")
def env(device: str, threads: int | None, as_json: bool) -> None:
    """The environment as a run record would store it: library versions, CPU model and flags, threads,
    the installed packages' digest, and the code's git commit."""
    data = {"environment": provenance.environment(device, threads), "code": provenance.git_commit()}
    if as_json:
        click.echo(json.dumps(data, indent=1))
        return
    for section, values in data.items():
        click.echo(f"{section}:")
        for key, value in values.items():
            text = ", ".join(value) if isinstance(value, list) else value
            click.echo(f"  {key:<18} {text}")


COMMANDS = [verify, check, env]
