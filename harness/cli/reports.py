"""Report commands: leaderboard, report, show, confusion, plot, misclassified, compare.

Kept light at import time (click only): ``cnnbench.cli`` imports this module for every
``bench`` invocation. Only ``misclassified`` (and ``report --data-dir``) import torch.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from cnnbench.cli.options import warnings_as_lines
from cnnbench.errors import BenchError, unknown_name
from cnnbench.files import write_atomic
from cnnbench.formatting import TABLEFMT, pct, per_class_table
from cnnbench.registry import Registry, registry_from
from cnnbench.reports import leaderboard as lb
from cnnbench.reports.browser import screenshot as take
from cnnbench.reports.leaderboard import load_records
from cnnbench.reports.runs import (
    compare_text,
    confusion_table,
    default_out,
    misclassified_grid,
    plot_curves,
    predict_test_set,
    recorded_errors,
    resolve_run,
    show_text,
)

if TYPE_CHECKING:
    from cnnbench.runrecord import RunRecord

RESULTS_DIR = click.option(
    "--results-dir", type=click.Path(file_okay=False), default="results", show_default=True,
    help="Folder of run records.",
)


def load_records_quietly(results_dir: str) -> list[RunRecord]:
    """Records of ``results_dir``; a bad file is named in a one-line warning on stderr."""
    with warnings_as_lines():
        return load_records(results_dir)


def _dataset_sizes(registry: Registry) -> dict[str, tuple[int, int]]:
    return {name: (e.record.train_size, e.record.test_size) for name, e in registry.entries("datasets").items()}


def _check_filters(registry: Registry, records: list[RunRecord], targets: tuple[str, ...],
                   datasets: tuple[str, ...], models: tuple[str, ...]) -> None:
    valid_targets = [t.id for t in registry.targets()]
    valid_datasets = sorted({*registry.entries("datasets"), *(r.dataset for r in records)})
    valid_models = sorted({*registry.entries("models"), *(r.model for r in records)})
    for kind, given, valid in (("target", targets, valid_targets), ("dataset", datasets, valid_datasets),
                               ("model", models, valid_models)):
        for name in given:
            if name not in valid:
                raise unknown_name(kind, name, valid)


@click.command()
@RESULTS_DIR
@click.option("--format", "fmt", type=click.Choice(["table", "markdown", "csv", "json", "html"]), default="table",
              show_default=True, help="Output format.")
@click.option("--target", "targets", multiple=True, metavar="ID", help="Only this target (repeatable).")
@click.option("--dataset", "datasets", multiple=True, metavar="NAME", help="Only this dataset (repeatable).")
@click.option("--model", "models", multiple=True, metavar="NAME", help="Only this model (repeatable).")
@click.option("--sort", "sort_by", type=click.Choice(["acc", "min", "best", "std", "params", "time", "speed", "model"]),
              default="acc", show_default=True,
              help="Order within each target: acc (passes first, then mean final accuracy), min, best, std, "
                   "params, time (to target), speed (img/s), model.")
@click.option("--write", is_flag=True,
              help="Regenerate results/LEADERBOARD.md and the README's leaderboard section from all records.")
@click.option("--readme", type=click.Path(dir_okay=False), default="README.md", show_default=True,
              help="README whose text between the leaderboard markers --write replaces.")
@click.pass_context
def leaderboard(ctx: click.Context, results_dir: str, fmt: str, targets: tuple[str, ...], datasets: tuple[str, ...],
                models: tuple[str, ...], sort_by: str, write: bool, readme: str) -> None:
    """Runs grouped by configuration (mean over seeds) and checked against every target of their dataset."""
    from cnnbench.reports import render  # lazy: tabulate

    registry = registry_from(ctx)
    records = load_records_quietly(results_dir)
    _check_filters(registry, records, targets, datasets, models)
    all_targets = registry.targets()
    groups = lb.group_records(records, lb.load_verifications(results_dir, records),
                              lb.load_deployments(results_dir, records))
    rows = lb.build_rows(groups, all_targets, _dataset_sizes(registry))
    rows = lb.sort_rows(rows, sort_by, [t.id for t in all_targets])
    if write:
        if targets or datasets or models:
            raise BenchError("--write renders every record; drop --target/--dataset/--model")
        for path in write_generated(rows, Path(results_dir), Path(readme)):
            click.echo(f"wrote {path}")
        return
    click.echo(render.render(lb.filter_rows(rows, targets, datasets, models), fmt), nl=False)


def write_generated(rows: list[lb.Row], results_dir: Path, readme: Path) -> list[Path]:
    """Write LEADERBOARD.md and splice the README section (each replaced atomically); returns the files written."""
    from cnnbench.reports import render  # lazy: tabulate

    written = []
    board = results_dir / "LEADERBOARD.md"
    write_atomic(board, render.leaderboard_markdown(rows))
    written.append(board)  # always rewritten: cheap, and it creates the file the first time
    if readme.is_file():
        text = readme.read_text()
        new = render.splice_readme(text, render.readme_section(rows), str(readme))
        if new != text:
            write_atomic(readme, new)
            written.append(readme)
        else:
            click.echo(f"{readme}: leaderboard section already up to date")
    else:
        click.echo(f"warning: {readme} not found; only {board} was written", err=True)
    return written


RUN = click.argument("run", metavar="RUN")


@click.command()
@RUN
@RESULTS_DIR
@click.pass_context
def show(ctx: click.Context, run: str, results_dir: str) -> None:
    """Everything about one RUN (id, unique prefix or path): settings, epochs, targets, per-class, confusion."""

    _, record = resolve_run(run, results_dir)
    registry = registry_from(ctx)
    rows = lb.build_rows(lb.group_records([record]), registry.targets(), _dataset_sizes(registry))
    lines = [f"{r.target.id}: {r.status} ({r.target.rule()})" for r in rows if r.target is not None]
    click.echo(show_text(record, lines), nl=False)


@click.command()
@RUN
@RESULTS_DIR
@click.option("--format", "fmt", type=click.Choice(["table", "markdown", "html"]), default="table", show_default=True)
def confusion(run: str, results_dir: str, fmt: str) -> None:
    """Per-class accuracy and the confusion matrix of RUN's last epoch."""

    _, record = resolve_run(run, results_dir)
    tablefmt = TABLEFMT[fmt]
    click.echo(f"{record.run_id}: final test accuracy {pct(record.final_test_acc)}\n")
    click.echo("per-class accuracy:\n" + per_class_table(record, tablefmt) + "\n")
    click.echo("confusion matrix (rows: true class, columns: predicted):\n" + confusion_table(record, tablefmt))


@click.command()
@RUN
@RESULTS_DIR
@click.option("--out", type=click.Path(dir_okay=False), help="PNG to write [bench-out/RUN-curves.png].")
def plot(run: str, results_dir: str, out: str | None) -> None:
    """PNG of RUN's train and test loss and accuracy per epoch."""

    _, record = resolve_run(run, results_dir)
    click.echo(f"wrote {plot_curves(record, Path(out) if out else default_out(record, 'curves'))}")


@click.command()
@RUN
@RESULTS_DIR
@click.option("--data-dir", type=click.Path(file_okay=False), help="Dataset folder [$BENCH_DATA_DIR or ./data].")
@click.option("--limit", type=click.IntRange(min=1), default=48, show_default=True, help="Images in the grid.")
@click.option("--out", type=click.Path(dir_okay=False), help="PNG to write [bench-out/RUN-misclassified.png].")
@click.pass_context
def misclassified(ctx: click.Context, run: str, results_dir: str, data_dir: str | None, limit: int,
                  out: str | None) -> None:
    """PNG grid of test images RUN's saved model gets wrong, with true and predicted labels."""

    path, record = resolve_run(run, results_dir)
    result = predict_test_set(record, path, registry_from(ctx), data_dir)
    written, errors = misclassified_grid(
        result, record, Path(out) if out else default_out(record, "misclassified"), limit
    )
    expected = recorded_errors(record)
    note = "" if expected is None else f" (the record's confusion matrix has {expected})"
    click.echo(f"{errors} of {len(result['labels'])} misclassified{note}; wrote {written}")


@click.command()
@click.argument("run_a", metavar="RUN_A")
@click.argument("run_b", metavar="RUN_B")
@RESULTS_DIR
def compare(run_a: str, run_b: str, results_dir: str) -> None:
    """RUN_A and RUN_B side by side: settings, accuracy per epoch, per-class accuracy."""

    _, a = resolve_run(run_a, results_dir)
    _, b = resolve_run(run_b, results_dir)
    click.echo(compare_text(a, b), nl=False)


@click.command()
@RESULTS_DIR
@click.option("--out", type=click.Path(file_okay=False), default="bench-out/report", show_default=True,
              help="Folder of the site (index.html, runs/, plots/); replaced on every build.")
@click.option("--data-dir", type=click.Path(), default=None,
              help="Dataset folder: adds the misclassified grid of configurations whose runs saved weights "
                   "(rebuilds each model with torch; skipped with a note where the data is not found).")
@click.option("--open", "open_browser", is_flag=True, help="Open index.html in the default browser.")
@click.option("--screenshot", type=click.Path(dir_okay=False), default=None,
              help="Also save a PNG of the index's top as headless Chromium shows it "
                   "(the README's and docs/reports.md's: results/report-index.png).")
@click.pass_context
def report(ctx: click.Context, results_dir: str, out: str, data_dir: str | None, open_browser: bool,
           screenshot: str | None) -> None:
    """A static, self-contained site from the run records: plots of the field, the leaderboards, a page per
    configuration. Opens from disk, offline."""

    from cnnbench.reports.site import build_site  # lazy: tabulate

    started = time.perf_counter()
    registry = registry_from(ctx)
    records = load_records_quietly(results_dir)
    make = None
    if data_dir is not None:
        if Path(data_dir).is_dir():
            make = _misclassified_maker(registry, Path(results_dir), data_dir)
        else:
            click.echo(f"warning: data dir {data_dir} not found; no misclassified grids", err=True)
    site = build_site(records, registry.targets(), Path(out), _dataset_sizes(registry), Path(results_dir), make)
    for note in site.notes:
        click.echo(f"note: {note}", err=True)
    reused = f", {site.reused} unchanged" if site.reused else ""
    click.echo(f"wrote {site.index} ({len(records)} runs: {site.pages} pages, {site.plots} plots{reused}) "
               f"in {time.perf_counter() - started:.1f}s")
    if screenshot:

        write_atomic(Path(screenshot), take(site.index))
        click.echo(f"wrote {screenshot}")
    if open_browser:
        click.launch(str(site.index.resolve()))


def _misclassified_maker(registry: Any, results_dir: Path, data_dir: str) -> Any:
    """The report's callback that draws a run's misclassified grid (torch is imported on its first call)."""

    def make(record: RunRecord, out: Path) -> str:

        result = predict_test_set(record, results_dir / f"{record.run_id}.json", registry, data_dir)
        _, errors = misclassified_grid(result, record, out, limit=32)
        return f"{errors} of {len(result['labels'])} test images are misclassified."

    return make


COMMANDS = [leaderboard, report, show, confusion, plot, misclassified, compare]
