"""From command-line options to training runs: validate names first, then train each seed."""

from __future__ import annotations

import importlib.util
from typing import Any

import click

from .errors import BenchError
from .registry import Registry


def parse_seeds(text: str) -> list[int]:
    """``"5"`` -> ``[0, 1, 2, 3, 4]``; ``"1,2,7"`` -> ``[1, 2, 7]``."""
    try:
        if "," in text:
            seeds = [int(s) for s in text.split(",") if s.strip()]
        else:
            seeds = list(range(int(text)))
    except ValueError:
        raise BenchError(f"--seeds {text!r}: give a count (5) or a comma-separated list (1,2,3)") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise BenchError(f"--seeds {text!r}: need at least one seed and no repeats")
    return seeds


def check_loader_available(registry: Registry, name: str) -> None:
    spec = registry.loader(name)
    missing = [m for m in spec.requires if importlib.util.find_spec(m) is None]
    if missing:
        hint = f"; {spec.install_hint}" if spec.install_hint else ""
        raise BenchError(f"loader {name!r} needs {', '.join(missing)}, which is not installed{hint}")


def per_class_table(record: dict[str, Any]) -> str:
    """Final-epoch test accuracy per class, as seed 003 reports it."""
    from tabulate import tabulate

    rows = [[name, f"{acc:.2%}"] for name, acc in record.get("per_class_acc", {}).items()]
    return tabulate(rows, headers=["class", "test acc"], colalign=("right", "right"))


def run_many(registry: Registry, model: str, seeds: list[int], opts: dict[str, Any]) -> list[dict[str, Any]]:
    """Train ``model`` once per seed with the CLI overrides in ``opts``; returns the records."""
    spec = registry.model(model)
    recipe = spec.recipe.updated(
        epochs=opts.get("epochs"),
        batch_size=opts.get("batch_size"),
        lr=opts.get("lr"),
        optimizer=opts.get("optimizer"),
        scheduler=opts.get("scheduler"),
        dropout=opts.get("dropout"),
        augmentation=opts.get("augment"),
    )
    # fail on bad names before any data is read
    registry.normalizer(opts.get("normalizer") or spec.normalizer)
    registry.augmentation(recipe.augmentation)
    check_loader_available(registry, opts.get("loader") or "memory")

    from .train import RunConfig, train  # torch is imported only from here on

    records = []
    for seed in seeds:
        config = RunConfig(
            model=model,
            recipe=recipe,
            seed=seed,
            normalizer=opts.get("normalizer"),
            loader=opts.get("loader") or "memory",
            device=opts.get("device") or "auto",
            precision=opts.get("precision") or "fp32",
            data_dir=opts.get("data_dir"),
            results_dir=opts.get("results_dir") or "results",
            threads=opts.get("threads"),
            loader_options={"workers": opts.get("workers") or 0},
            limit_train=opts.get("limit_train"),
            limit_test=opts.get("limit_test"),
            progress=not opts.get("no_progress"),
        )
        if len(seeds) > 1:
            click.echo(f"== {model} seed {seed} ({seeds.index(seed) + 1}/{len(seeds)})")
        record, path = train(config, registry)
        records.append(record)
        click.echo(per_class_table(record))
        click.echo(
            f"{record['model']} seed {seed}: final {record['final_test_acc']:.2%}, best {record['best_test_acc']:.2%} "
            f"(epoch {record['best_epoch']}), {record['params']:,} params, {record['total_seconds']:.0f}s -> {path}"
        )
    if len(records) > 1:
        finals = [r["final_test_acc"] for r in records]
        mean = sum(finals) / len(finals)
        std = (sum((f - mean) ** 2 for f in finals) / (len(finals) - 1)) ** 0.5
        click.echo(f"{model} over {len(finals)} seeds: final test acc {mean:.2%} +- {std:.2%} (sample std)")
    return records
