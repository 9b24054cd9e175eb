"""Console output of ``bench run``, as a plugin (pytest's terminal reporter is the model).

Everything ``bench run`` prints about a run comes from these hooks: a header, a progress
bar per epoch, one line per epoch, the per-class table and the result line, and the mean
over seeds. ``bench --no-plugin console run ...`` silences it; another plugin can print its
own lines from the same hooks.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import click

from cnnbench import EpochStats, RunInfo, RunRecord, hookimpl
from cnnbench.formatting import pct, per_class_table


@hookimpl
def cnnbench_run_start(run: RunInfo) -> None:
    click.echo(
        f"== {run.model} seed {run.seed}: {run.params:,} params, {run.dataset}, {run.normalizer} norm, "
        f"{run.augmentation} augmentation, {run.loader} loader, {run.device} {run.precision}"
    )


@hookimpl
def cnnbench_epoch_batches(run: RunInfo, epoch: int, epochs: int, batches: Iterable[Any], progress: bool) -> Any:
    from tqdm.auto import tqdm  # lazy: tqdm

    return tqdm(batches, desc=f"epoch {epoch}/{epochs}", leave=False, disable=None if progress else True)


@hookimpl
def cnnbench_epoch_end(run: RunInfo, epoch: EpochStats) -> None:
    from tqdm.auto import tqdm  # lazy: tqdm

    loss = "not finite" if epoch.train_loss is None else f"{epoch.train_loss:.4f}"
    val = f"val {pct(epoch.val_acc)}  " if epoch.val_acc is not None else ""
    tqdm.write(
        f"epoch {epoch.epoch:>3}  loss {loss}  train {pct(epoch.train_acc)}  {val}"
        f"test {pct(epoch.test_acc)}  lr {epoch.lr:.4g}  {epoch.seconds:.1f}s  {epoch.images_per_s:,.0f} img/s"
    )


@hookimpl
def cnnbench_record_written(record: RunRecord, path: Path) -> None:
    click.echo(per_class_table(record))
    click.echo(
        f"{record.model} seed {record.seed}: final {pct(record.final_test_acc)}, best {pct(record.best_test_acc)} "
        f"(epoch {record.best_epoch}), {record.params:,} params, {record.total_seconds:.0f}s"
        + (f" ({record.wall_seconds:.0f}s wall)" if record.wall_seconds is not None else "") + f" -> {path}"
    )


@hookimpl
def cnnbench_runs_finished(records: list[RunRecord]) -> None:
    if len(records) < 2:
        return
    finals = [r.final_test_acc for r in records]
    click.echo(
        f"{records[0].model} over {len(finals)} seeds: final test acc {pct(statistics.fmean(finals))} "
        f"+- {pct(statistics.stdev(finals))} (sample std)"
    )
