"""``bench convert``: dataset splits to ffcv ``.beton`` files, added through ``cnnbench_commands``.

Kept light at import time (click only): ``bench --help`` lists plugin commands, so this
module is imported for every ``bench`` invocation; torch and ffcv are imported inside the command.
"""

from __future__ import annotations

import click

from cnnbench import hookimpl
from cnnbench.registry import registry_from
from cnnbench.training.plan import check_count, core_cap

from .ffcv_convert import ensure_beton


@click.command()
@click.option("--dataset", required=True, help="Dataset to convert (see `bench list datasets`), e.g. mnist, cifar10.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False),
              help="Folder to read and write the .beton files in [the cache: $BENCH_CACHE_DIR/ffcv, else "
                   "$XDG_CACHE_HOME/cnnbench/ffcv, else ~/.cache/cnnbench/ffcv; an up-to-date file in "
                   "<data-dir>/ffcv is reused, but nothing is written into the data dir unless --out names it].")
@click.option("--data-dir", type=click.Path(file_okay=False),
              help="Folder holding the dataset [$BENCH_DATA_DIR or ./data]")
@click.option("--split", type=click.Choice(["train", "test", "both"]), default="both", show_default=True)
@click.option("--force", is_flag=True, help="Rewrite even when an up-to-date file exists.")
@click.option("--workers", type=click.IntRange(min=1),
              help="ffcv writer processes [all cores, at most 8; at most 4 per core].")
@click.pass_context
def convert(ctx: click.Context, dataset: str, out_dir: str | None, data_dir: str | None, split: str,
            force: bool, workers: int | None) -> None:
    """Write the train and test splits of DATASET as ffcv .beton files (for `--loader ffcv`).

    A split whose file is up to date (same source-file checksums) is skipped; a changed
    source is converted again. Files go to the cache dir (or --out), never into the data dir.
    """
    if workers is not None:
        check_count("--workers", workers, 1, *core_cap(here=True))
    spec = registry_from(ctx).dataset(dataset)
    for name in ("train", "test") if split == "both" else (split,):
        done = ensure_beton(spec, name, data_dir, out_dir=out_dir, force=force, log=click.echo, workers=workers)
        if done.written:
            size = done.path.stat().st_size / 1e6
            click.echo(
                f"{dataset} {name}: wrote {done.count:,} images, {size:.1f} MB in {done.seconds:.1f}s -> {done.path}"
            )
        else:
            click.echo(f"{dataset} {name}: up to date ({done.count:,} images) -> {done.path}")


@hookimpl
def cnnbench_commands() -> list[click.Command]:
    return [convert]
