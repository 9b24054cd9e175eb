"""The leaderboard: run records grouped by configuration and checked against the targets.

Pure Python (json, statistics, tabulate): reading a thousand records must not import torch.

The rule (also printed under every table): a group of runs passes a target when the
mean over its seeds of the *final-epoch* test accuracy reaches the target, it has fewer
parameters than the target allows and it ran no more epochs than the target allows.
The best epoch is picked on the test set, so its accuracy is shown for comparison only;
a group that reaches the target only at its best epoch is marked ``best epoch only``.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
import statistics
import textwrap
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import BenchError
from .formatting import TABLEFMT, pct, seconds_text
from .records import Target
from .runrecord import RunRecord, iter_records

EPS = 1e-9  # accuracies are fractions of the test set; guard the comparison against rounding
START, END = "<!-- leaderboard:start -->", "<!-- leaderboard:end -->"
FORMATS = ("table", "markdown", "csv", "json", "html")
SORT_KEYS = ("acc", "min", "best", "std", "params", "time", "speed", "model")
PASS, BEST_ONLY, SUBSET = "pass", "best epoch only", "data subset"
RULE = (
    "A configuration is checked against every target of its dataset. It passes when the mean over its "
    "seeds of the final-epoch test accuracy reaches the target's accuracy, it has fewer parameters than "
    "the target's limit and it ran no more epochs than the target allows. The best-epoch accuracy is chosen "
    "on the test set, so it is shown for comparison only: a configuration that reaches the target only at "
    "its best epoch is marked \"best epoch only\" and does not pass. Runs trained or tested on a subset of "
    "the data are marked \"data subset\" and never pass. \"reached\" is the first epoch at which the mean "
    "test accuracy over the seeds met the target's accuracy; \"time\" is the mean training + evaluation time "
    "up to that epoch. std is the sample standard deviation over seeds. n counts distinct seeds: when a seed "
    "was run more than once, its newest record stands for it (the json and csv formats list the others as "
    "superseded_runs). A seed whose training loss stopped being finite counts as a failed (diverged) seed. "
    "img/s is the training throughput; \"(shared N)\" marks runs that shared their CPU or GPU with N "
    "cnnbench jobs (a sweep), so it is not the speed of the device alone; older records do not say; "
    "\"(fused N)\" marks N seeds trained as one batched computation (the figure is per seed). A target with "
    "a time budget also needs every run's wall time (data loading to the final evaluation, compilation "
    "included) within the bound for its hardware class (cpu-<threads> or gpu-<model>); records without a "
    "wall time, or on hardware the target has no bound for, do not pass it. Test-time augmentation is "
    "shown in the recipe (tta flip) and fails targets that forbid it."
)


@dataclass
class Group:
    """Runs of one configuration (same dataset, model, normalizer, augmentation, loader, precision, recipe)."""

    key: tuple[Any, ...]
    records: list[RunRecord] = field(default_factory=list)
    superseded: list[RunRecord] = field(default_factory=list)  # older records of a seed already counted

    @property
    def first(self) -> RunRecord:
        return self.records[0]

    @property
    def finals(self) -> list[float]:
        return [float(r.final_test_acc) for r in self.records]

    @property
    def bests(self) -> list[float]:
        return [float(r.best_test_acc) for r in self.records]

    def mean_final(self) -> float:
        return statistics.fmean(self.finals)

    def std_final(self) -> float | None:
        return statistics.stdev(self.finals) if len(self.records) > 1 else None

    def mean_best(self) -> float:
        return statistics.fmean(self.bests)

    def epochs_run(self) -> int:
        return max(r.n_epochs for r in self.records)

    def params(self) -> int:
        return max(int(r.params) for r in self.records)

    def images_per_s(self) -> float | None:
        speeds = [float(r.images_per_s) for r in self.records if r.images_per_s]
        return statistics.fmean(speeds) if speeds else None

    def device_shared_by(self) -> int | None:
        """The most cnnbench jobs any of these runs shared its device with (None: not recorded)."""
        counts = [r.launch.get("jobs_on_device") for r in self.records]
        known = [int(c) for c in counts if isinstance(c, int)]
        return max(known) if known else None

    def mean_curve(self) -> list[tuple[int, float, float]]:
        """``(epoch, mean test acc, mean cumulative seconds)`` over the epochs every seed ran."""
        shortest = min(len(r.epochs) for r in self.records)
        curve, elapsed = [], 0.0
        for i in range(shortest):
            accs = [float(r.epochs[i].test_acc) for r in self.records]
            elapsed += statistics.fmean(float(r.epochs[i].seconds or 0.0) for r in self.records)
            curve.append((i + 1, statistics.fmean(accs), elapsed))
        return curve

    def hardware(self) -> str:
        return "; ".join(sorted({hardware_of(r) for r in self.records}))

    def hardware_classes(self) -> list[str]:
        return sorted({hardware_class(r) for r in self.records})

    def max_wall_seconds(self) -> float | None:
        """The slowest run's wall time (None when a run did not record one)."""
        walls = [r.wall_seconds for r in self.records]
        return None if any(w is None for w in walls) else max(float(w) for w in walls)

    def fused_seeds(self) -> int | None:
        counts = [r.launch.get("fused_seeds") for r in self.records]
        known = [int(c) for c in counts if isinstance(c, int)]
        return max(known) if known else None

    def seeds(self) -> list[Any]:
        return sorted((r.seed for r in self.records), key=lambda s: (s is None, s))


@dataclass
class Row:
    """One (configuration, target) line of the leaderboard."""

    group: Group
    target: Target | None
    status: str
    reached_epoch: int | None
    reached_seconds: float | None

    def as_dict(self) -> dict[str, Any]:
        g, r = self.group, self.group.first
        return {
            "target": self.target.id if self.target else None,
            "status": self.status,
            "dataset": r.dataset,
            "model": r.model,
            "normalizer": r.normalizer,
            "augmentation": r.augmentation,
            "loader": r.loader,
            "precision": r.precision,
            "fast_path": precision_text(r).removeprefix(r.precision).lstrip(", "),
            "recipe": recipe_text(r.recipe),
            "n": len(g.records),
            "seeds": g.seeds(),
            "final_mean": g.mean_final(),
            "final_std": g.std_final(),
            "final_min": min(g.finals),
            "best_epoch_mean": g.mean_best(),
            "reached_epoch": self.reached_epoch,
            "time_to_target_s": self.reached_seconds,
            "params": g.params(),
            "epochs": g.epochs_run(),
            "images_per_s": g.images_per_s(),
            "device_shared_by": g.device_shared_by(),
            "hardware": g.hardware(),
            "hardware_class": ", ".join(g.hardware_classes()),
            "wall_s_max": g.max_wall_seconds(),
            "fused_seeds": g.fused_seeds(),
            "runs": [x.run_id for x in g.records],
            "superseded_runs": [x.run_id for x in g.superseded],
        }


def hardware_of(record: RunRecord) -> str:
    """The GPU of a CUDA run, else the CPU model and thread count."""
    machine = record.machine
    if device_kind(record) == "cuda" and machine.get("gpu"):
        return str(machine["gpu"])
    cpu = re.sub(r"\((R|TM|tm)\)|\bCPU\b|@.*$", "", str(machine.get("cpu") or "unknown CPU"))
    cpu = " ".join(cpu.split())
    threads = record.threads
    return f"{cpu}, {threads} threads" if threads else cpu


def hardware_class(record: RunRecord) -> str:
    """What a target's time budget is keyed by: ``gpu-h100`` (the GPU's model), ``cpu-2`` (CPU threads)."""
    machine, kind = record.machine, device_kind(record)
    if kind != "cpu":
        name = str(machine.get("gpu") or "unknown").lower().replace("nvidia", "").replace("geforce", "")
        model = next((w for w in re.split(r"[\s_-]+", name) if re.search(r"\d", w)), name.strip() or "unknown")
        return f"gpu-{model}" if kind == "cuda" else f"{kind}-{model}"
    return f"cpu-{record.threads}" if record.threads else "cpu"


def precision_text(record: RunRecord) -> str:
    """Precision plus the fast-path options that change how a step runs (channels_last, compile)."""
    fast = record.fast_path or {}
    parts = [record.precision]
    if fast.get("channels_last"):
        parts.append("cl")
    if fast.get("compile") not in (None, "none"):
        parts.append(f"compile {fast['compile']}")
    return ", ".join(parts)


def recipe_text(recipe: dict[str, Any]) -> str:
    """A short, stable description of a recipe, e.g. ``sgd lr 0.1 m 0.9, step(2, 0.6), bs 128, 15 ep``."""
    if not recipe:
        return "?"
    parts = [f"{recipe.get('optimizer', '?')} lr {recipe.get('lr', '?')}"]
    if recipe.get("optimizer") == "sgd" and recipe.get("momentum"):
        parts[0] += f" {'nesterov' if recipe.get('nesterov') else 'm'} {recipe['momentum']}"
    if recipe.get("weight_decay"):
        parts.append(f"wd {recipe['weight_decay']}")
    sched = recipe.get("scheduler", "none")
    if sched == "step":
        parts.append(f"step({recipe.get('step_size')}, {recipe.get('gamma')})")
    elif sched != "none":
        warmup = recipe.get("warmup_epochs")
        parts.append(f"{sched}(warm-up {warmup:g} ep)" if warmup is not None else str(sched))
    if recipe.get("label_smoothing"):
        parts.append(f"ls {recipe['label_smoothing']}")
    if recipe.get("ema") is not None:
        parts.append(f"ema {recipe['ema']}")
    if recipe.get("tta", "none") != "none":
        parts.append(f"tta {recipe['tta']}")
    parts.append(f"bs {recipe.get('batch_size', '?')}")
    if recipe.get("dropout") is not None:
        parts.append(f"dropout {recipe['dropout']}")
    parts.append(f"{recipe.get('epochs', '?')} ep")
    return ", ".join(parts)


def device_kind(record: RunRecord) -> str:
    """``cpu``, ``cuda``, ...: runs on a GPU and on a CPU are different configurations."""
    return str(record.device or "cpu").split(":")[0]


def group_key(record: RunRecord) -> tuple[Any, ...]:
    """What makes two runs seeds of one configuration."""
    recipe = json.dumps(record.recipe, sort_keys=True)
    return (
        record.dataset, record.model, record.normalizer, record.augmentation, record.loader,
        precision_text(record), recipe, record.train_images, record.test_images, device_kind(record),
    )


def load_records(results_dir: Path | str) -> list[RunRecord]:
    """Every usable record (bad files warn through ``iter_records``)."""
    return [loaded.data for loaded in iter_records(Path(results_dir))]


def group_records(records: Iterable[RunRecord]) -> list[Group]:
    """Records by configuration, one per seed: the newest record of a seed stands for it, so n and
    the std count distinct seeds; the others are kept as ``superseded``."""
    groups: dict[tuple[Any, ...], Group] = {}
    for record in sorted(records, key=lambda r: r.run_id, reverse=True):
        group = groups.setdefault(group_key(record), Group(group_key(record)))
        seen = {r.seed for r in group.records}
        (group.superseded if record.seed is not None and record.seed in seen else group.records).append(record)
    for group in groups.values():
        group.records.reverse()
        group.superseded.reverse()
    return sorted(groups.values(), key=lambda g: g.records[0].run_id)


def is_subset(group: Group, sizes: dict[str, tuple[int, int]]) -> bool:
    """True when the runs used fewer train or test images than the dataset has."""
    full = sizes.get(group.first.dataset)
    if not full:
        return False
    train_full, test_full = full
    for r in group.records:
        train_n, test_n = r.train_images, r.test_images
        if (train_full and train_n is not None and train_n < train_full) or (
            test_full and test_n is not None and test_n < test_full
        ):
            return True
    return False


def check(group: Group, target: Target, subset: bool = False) -> Row:
    """Target arithmetic for one group: status, first epoch at the target, time to it."""
    goal = target.min_test_acc - EPS
    reached = next(((e, s) for e, acc, s in group.mean_curve() if acc >= goal), (None, None))
    failures = []
    if group.mean_final() < goal:
        failures.append("acc")
    if group.params() >= target.params_below:
        failures.append("params")
    if target.max_epochs is not None and group.epochs_run() > target.max_epochs:
        failures.append("epochs")
    diverged = sum(r.status == "diverged" for r in group.records)
    if diverged:  # a seed that did not converge is a failed seed of its configuration (MLPerf's rule)
        failures.append(f"{diverged} diverged")
    if not target.allow_tta and any(r.recipe.get("tta", "none") != "none" for r in group.records):
        failures.append("tta")
    failures.extend(time_failures(group, target))
    if subset:
        status = SUBSET
    elif not failures:
        status = PASS
    elif failures == ["acc"] and group.mean_best() >= goal:
        status = BEST_ONLY
    else:
        status = f"fail ({', '.join(failures)})"
    return Row(group, target, status, reached[0], reached[1])


def time_failures(group: Group, target: Target) -> list[str]:
    """Why the group's runs miss the target's time budget: each run against the bound of its own
    hardware class (empty when the target has no budget or every run meets it)."""
    if not target.max_seconds:
        return []
    failures = set()
    for record in group.records:
        hardware = hardware_class(record)
        bound = target.time_budget(hardware)
        if bound is None:
            failures.add(f"no time budget for {hardware}")
        elif record.wall_seconds is None:
            failures.add("no wall time")
        elif record.resumed_at:  # the part of an epoch lost to the interruption is on no clock
            failures.add("resumed")
        elif record.wall_seconds > bound:
            failures.add("time")
    return sorted(failures)


def build_rows(
    groups: list[Group], targets: list[Target], sizes: dict[str, tuple[int, int]] | None = None
) -> list[Row]:
    """One row per (group, target of its dataset); a group whose dataset has no target gets one row."""
    rows = []
    for group in groups:
        subset = is_subset(group, sizes or {})
        mine = [t for t in targets if t.dataset == group.first.dataset]
        if not mine:
            rows.append(Row(group, None, SUBSET if subset else "no target", None, None))
        rows.extend(check(group, t, subset) for t in mine)
    return rows


STATUS_RANK = {PASS: 0, BEST_ONLY: 1}
ROW_FIELDS = [
    "target", "status", "dataset", "model", "normalizer", "augmentation", "loader", "precision", "fast_path",
    "recipe", "n",
    "seeds", "final_mean", "final_std", "final_min", "best_epoch_mean", "reached_epoch", "time_to_target_s",
    "params", "epochs", "images_per_s", "device_shared_by", "fused_seeds", "hardware", "hardware_class",
    "wall_s_max", "runs", "superseded_runs",
]


def sort_rows(rows: list[Row], by: str = "acc", target_order: list[str] | None = None) -> list[Row]:
    """Rows by target (in registry order), then by ``by``; ties by model and run ids (stable output)."""
    if by not in SORT_KEYS:
        raise BenchError(f"unknown sort key {by!r}; valid sort keys: {', '.join(SORT_KEYS)}")
    order = {t: i for i, t in enumerate(target_order or [])}
    inf = math.inf

    def metric(row: Row) -> tuple[Any, ...]:
        g = row.group
        speed = g.images_per_s()
        values: dict[str, tuple[Any, ...]] = {
            "acc": (-g.mean_final(),),
            "min": (-min(g.finals),),
            "best": (-g.mean_best(),),
            "std": (g.std_final() if g.std_final() is not None else inf,),
            "params": (g.params(),),
            "time": (row.reached_seconds if row.reached_seconds is not None else inf, -g.mean_final()),
            "speed": (-(speed or 0.0),),
            "model": (g.first.model,),
        }
        return values[by]

    def key(row: Row) -> tuple[Any, ...]:
        tid = row.target.id if row.target else ""
        rank = STATUS_RANK.get(row.status, 2) if by == "acc" else 0
        return (row.target is None, order.get(tid, len(order)), tid, rank, *metric(row),
                row.group.first.model, row.group.first.run_id)

    return sorted(rows, key=key)


def filter_rows(
    rows: list[Row], targets: Iterable[str] = (), datasets: Iterable[str] = (), models: Iterable[str] = ()
) -> list[Row]:
    targets, datasets, models = set(targets), set(datasets), set(models)
    return [
        r for r in rows
        if (not targets or (r.target is not None and r.target.id in targets))
        and (not datasets or r.group.first.dataset in datasets)
        and (not models or r.group.first.model in models)
    ]


# --- rendering ------------------------------------------------------------------------

HEADERS = [
    "status", "model", "normalizer", "aug", "loader", "prec", "recipe", "n", "final mean", "std", "min",
    "best epoch", "reached", "time", "params", "epochs", "img/s", "hardware",
]


def display_cells(row: Row) -> list[Any]:
    d = row.as_dict()
    return [
        d["status"], d["model"], d["normalizer"], d["augmentation"], d["loader"], precision_text(row.group.first),
        d["recipe"],
        # three digits for the mean the pass mark rests on: 99.396% must not read as 99.40%
        d["n"], pct(d["final_mean"], 3), pct(d["final_std"]),
        pct(d["final_min"]), pct(d["best_epoch_mean"]),
        "-" if d["reached_epoch"] is None else d["reached_epoch"], seconds_text(d["time_to_target_s"]),
        f"{d['params']:,}", d["epochs"], speed_text(d["images_per_s"], d["device_shared_by"], d["fused_seeds"]),
        d["hardware"],
    ]


def speed_text(speed: float | None, shared_by: int | None, fused: int | None = None) -> str:
    """img/s; ``(shared 4)`` when the runs shared their device with other cnnbench jobs."""
    if speed is None:
        return "-"
    return f"{speed:,.0f}" + (f" (shared {shared_by})" if shared_by and shared_by > 1 else "") + (
        f" (fused {fused})" if fused and fused > 1 else "")


def sections(rows: list[Row]) -> list[tuple[str, list[Row]]]:
    """Rows split by target (rows already sorted so each target's rows are together)."""
    out: list[tuple[str, list[Row]]] = []
    for row in rows:
        title = (
            f"{row.target.id} ({row.target.dataset}): {row.target.rule()}; {row.target.source}"
            if row.target else f"{row.group.first.dataset}: no target"
        )
        if not out or out[-1][0] != title:
            out.append((title, []))
        out[-1][1].append(row)
    return out


def render(rows: list[Row], fmt: str = "table", heading_level: int = 2) -> str:
    """The leaderboard as text in ``fmt`` (one of ``FORMATS``)."""
    if fmt not in FORMATS:
        raise BenchError(f"unknown format {fmt!r}; valid formats: {', '.join(FORMATS)}")
    if fmt == "json":
        return json.dumps({"rule": RULE, "rows": [r.as_dict() for r in rows]}, indent=1) + "\n"
    if fmt == "csv":
        buf = io.StringIO()
        dicts = [r.as_dict() for r in rows]
        writer = csv.DictWriter(buf, fieldnames=ROW_FIELDS, lineterminator="\n")
        writer.writeheader()
        for d in dicts:
            writer.writerow({k: ";".join(map(str, v)) if isinstance(v, list) else v for k, v in d.items()})
        return buf.getvalue()
    if fmt == "html":  # a complete page built from the same table component as `bench report`
        from .html import leaderboard_document

        return leaderboard_document(rows, heading_level)

    from tabulate import tabulate

    tablefmt = TABLEFMT[fmt]
    if not rows:
        return "No runs.\n\n" + footer(fmt)
    parts = []
    for title, section in sections(rows):
        table = tabulate([display_cells(r) for r in section], headers=HEADERS, tablefmt=tablefmt,
                         disable_numparse=True)
        if fmt == "markdown":
            parts.append(f"{'#' * heading_level} {title}\n\n{table}\n")
        else:
            parts.append(f"{title}\n\n{table}\n")
    return "\n".join(parts) + "\n" + footer(fmt)


def footer(fmt: str) -> str:
    if fmt == "html":
        from .html import esc

        return f'<p class="rule">{esc(RULE)}</p>\n'
    return textwrap.fill(RULE, 110) + "\n" if fmt == "table" else f"*{RULE}*\n"


# --- generated files --------------------------------------------------------------------


def leaderboard_markdown(rows: list[Row]) -> str:
    """Content of ``results/LEADERBOARD.md`` (deterministic: no dates, stable order)."""
    return (
        "# Leaderboard\n\n"
        "Generated from the run records in `results/` by `bench leaderboard --write`; do not edit by hand.\n\n"
        + render(rows, "markdown", heading_level=2)
    )


def readme_section(rows: list[Row]) -> str:
    """The text between the README's leaderboard markers."""
    return (
        "\n_Generated by `bench leaderboard --write` from the records in `results/` "
        "(full table: [results/LEADERBOARD.md](results/LEADERBOARD.md))._\n\n"
        + render(rows, "markdown", heading_level=3)
    )


def splice_readme(text: str, section: str, name: str = "README.md") -> str:
    """``text`` with everything between the markers replaced by ``section``."""
    start, end = text.find(START), text.find(END)
    if start < 0 or end < 0 or end < start:
        raise BenchError(f"{name} has no '{START}' ... '{END}' markers; add them where the leaderboard goes")
    return text[: start + len(START)] + "\n" + section.strip("\n") + "\n" + text[end:]
