"""The leaderboard: run records grouped by configuration and checked against the targets.

Pure Python (json, statistics, tabulate): reading a thousand records must not import torch.

The rule (also printed under every table): a group of runs passes a target when the
mean over its seeds of the *final-epoch* test accuracy reaches the target, it has fewer
parameters than the target allows and it ran no more epochs than the target allows.
The best epoch is picked on the test set, so its accuracy is shown for comparison only;
a group that reaches the target only at its best epoch is marked ``best epoch only``.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cnnbench.choices import BOARD_FORMATS
from cnnbench.deploy import store as deploy_store
from cnnbench.errors import BenchError
from cnnbench.records import Target
from cnnbench.reports import stats
from cnnbench.runrecord import (
    RunRecord,
    device_kind,
    hardware_class,
    hardware_of,
    iter_records,
    precision_text,
    recipe_text,
)
from cnnbench.verify import store

EPS = 1e-9  # accuracies are fractions of the test set; guard the comparison against rounding
START, END = "<!-- leaderboard:start -->", "<!-- leaderboard:end -->"
FORMATS = BOARD_FORMATS  # cnnbench.choices.BoardFormat
SORT_KEYS = ("acc", "min", "best", "std", "params", "time", "speed", "model")
PASS, BEST_ONLY, SUBSET, PROVISIONAL = "pass", "best epoch only", "data subset", "provisional"
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
    "shown in the recipe (tta flip) and fails targets that forbid it. A target may ask for a minimum number of "
    "seeds: a configuration that meets it on fewer is \"provisional\", not a pass; and for a confidence level: "
    "the one-sided t-test of \"mean >= target\" must then give p <= 1 - confidence. \"95% CI\" is the "
    "confidence interval of the mean final accuracy (Student's t); \"p\" the one-sided p-value that the "
    "mean reaches the target (small is strong evidence; none for one seed). \"wall\" is the median wall time "
    "per run (json and csv also give MLPerf's mean without the fastest and slowest run, from five runs). "
    "\"verified\" counts the seeds whose run bench verify reproduced (exactly, or within its stated "
    "tolerance on other hardware). \"int8\" is the mean top-1 of the runs' int8 models (bench deploy: ONNX "
    "Runtime static quantization, calibrated on training images) with its change from their fp32 ONNX "
    "accuracy in points (no test-time augmentation); \"int8 B\" the largest int8 model's stored bytes; \"ms\" "
    "the median batch-1 latency, fp32/int8, on one thread of the machine that deployed them. A target with a "
    "deployment budget (int8 accuracy, model bytes) needs every seed deployed; the int8 mean must reach it "
    "and the largest int8 model fit its bytes."
)


@dataclass
class Group:
    """Runs of one configuration (same dataset, model, normalizer, augmentation, loader, precision, recipe)."""

    key: tuple[Any, ...]
    records: list[RunRecord] = field(default_factory=list)
    superseded: list[RunRecord] = field(default_factory=list)  # older records of a seed already counted
    verified: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # run id -> passing verifications
    deployed: dict[str, dict[str, Any]] = field(default_factory=dict)  # run id -> its deployment (bench deploy)

    def summary(self) -> stats.Summary:
        return stats.summarize(self.finals)

    def p_reaching(self, goal: float) -> float | None:
        return stats.p_mean_at_least(self.finals, goal)

    def walls(self) -> list[float]:
        return [float(r.wall_seconds) for r in self.records if r.wall_seconds is not None]

    def verified_runs(self) -> list[str]:
        return [r.run_id for r in self.records if self.verified.get(r.run_id)]

    def verified_where(self) -> list[str]:
        """Where the passing verifications ran: ``host (cpu, verdict)``, once each."""
        places = {
            f"{v.get('host', '?')} ({v.get('environment', {}).get('here', {}).get('cpu', '?')}, {v.get('verdict')})"
            for r in self.records for v in self.verified.get(r.run_id, [])
        }
        return sorted(places)

    def deployments(self) -> list[dict[str, Any]]:
        """The deployments of this group's runs (those that have one)."""
        return [self.deployed[r.run_id] for r in self.records if r.run_id in self.deployed]

    def fully_deployed(self) -> bool:
        return all(r.run_id in self.deployed for r in self.records)

    def int8_mean(self) -> float | None:
        found = self.deployments()
        return statistics.fmean(float(d["int8"]["acc"]) for d in found) if found else None

    def int8_drop_mean(self) -> float | None:
        """Mean change int8 - fp32 (ONNX Runtime, same test set), as a fraction; negative is a loss."""
        found = self.deployments()
        return statistics.fmean(-float(d["int8"]["drop"]) for d in found) if found else None

    def int8_bytes(self) -> int | None:
        found = self.deployments()
        return max(int(d["int8"]["model_bytes"]["total"]) for d in found) if found else None

    def latency_ms(self, precision: str) -> float | None:
        found = self.deployments()
        return statistics.median(float(d[precision]["latency"]["median_ms"]) for d in found) if found else None

    def peak_activation_bytes(self) -> int | None:
        found = self.deployments()
        return max(int(d["int8"]["peak_activation"]["bytes"]) for d in found) if found else None

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
        known = [float(w) for w in walls if w is not None]
        return max(known) if len(known) == len(walls) else None

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
        summary = g.summary()
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
            "final_ci95_low": summary.ci_low,
            "final_ci95_high": summary.ci_high,
            "p_reaching_target": g.p_reaching(self.target.min_test_acc) if self.target else None,
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
            "wall_s_median": stats.median_seconds(g.walls()),
            "wall_s_trimmed_mean": stats.trimmed_mean_seconds(g.walls()),
            "verified": len(g.verified_runs()),
            "verified_runs": g.verified_runs(),
            "verified_where": g.verified_where(),
            "fused_seeds": g.fused_seeds(),
            "deployed": len(g.deployments()),
            "int8_acc_mean": g.int8_mean(),
            "int8_change_mean": g.int8_drop_mean(),
            "int8_model_bytes": g.int8_bytes(),
            "fp32_latency_ms": g.latency_ms("fp32"),
            "int8_latency_ms": g.latency_ms("int8"),
            "int8_peak_activation_bytes": g.peak_activation_bytes(),
            "runs": [x.run_id for x in g.records],
            "superseded_runs": [x.run_id for x in g.superseded],
        }


def group_key(record: RunRecord) -> tuple[Any, ...]:
    """What makes two runs seeds of one configuration."""
    recipe = json.dumps(record.recipe, sort_keys=True)
    return (
        record.dataset, record.model, record.normalizer, record.augmentation, record.loader,
        precision_text(record), recipe, record.train_images, record.test_images, device_kind(record),
    )


def load_verifications(results_dir: Path | str, records: Iterable[RunRecord]) -> dict[str, list[dict[str, Any]]]:
    """The passing verifications of each record that has a verification file beside it."""
    found = {}
    for record in records:
        passing = store.passing(Path(results_dir), record.run_id)
        if passing:
            found[record.run_id] = passing
    return found


def load_deployments(results_dir: Path | str, records: Iterable[RunRecord]) -> dict[str, dict[str, Any]]:
    """The deployment of each record that has a readable deployment file beside it (``bench deploy``)."""
    found = {}
    for record in records:
        deployment = deploy_store.deployment_of(Path(results_dir), record.run_id)
        if deployment is not None:
            found[record.run_id] = deployment
    return found


def load_records(results_dir: Path | str) -> list[RunRecord]:
    """Every usable record (bad files warn through ``iter_records``)."""
    return [loaded.data for loaded in iter_records(Path(results_dir))]


def group_records(records: Iterable[RunRecord], verified: dict[str, list[dict[str, Any]]] | None = None,
                  deployed: dict[str, dict[str, Any]] | None = None) -> list[Group]:
    """Records by configuration, one per seed: the newest record of a seed stands for it, so n and
    the std count distinct seeds; the others are kept as ``superseded``. ``verified``: the passing
    verifications by run id (``load_verifications``); ``deployed``: deployments by run id (``load_deployments``)."""
    groups: dict[tuple[Any, ...], Group] = {}
    for record in sorted(records, key=lambda r: r.run_id, reverse=True):
        group = groups.setdefault(group_key(record), Group(group_key(record), verified=verified or {},
                                                                deployed=deployed or {}))
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
    reached = next(((e, s) for e, acc, s in group.mean_curve() if acc >= goal), (None, None)) \
        if target.min_test_acc > 0 else (None, None)
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
    failures.extend(deployment_failures(group, target))
    p_value = group.p_reaching(target.min_test_acc)
    if target.confidence is not None and (p_value is None or p_value > 1 - target.confidence):
        failures.append(f"not {target.confidence:.0%} confident")
    if subset:
        status = SUBSET
    elif not failures and len(group.records) < target.min_seeds:
        status = f"{PROVISIONAL} ({len(group.records)} of {target.min_seeds} seeds)"
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


def deployment_failures(group: Group, target: Target) -> list[str]:
    """Why the group misses the target's deployment budget: seeds not deployed, the int8 mean below the
    target, the largest int8 model over its bytes (empty when the target has no such budget)."""
    if target.min_int8_acc is None and target.max_model_bytes is None:
        return []
    missing = len(group.records) - len(group.deployments())
    if missing:
        return [f"{missing} of {len(group.records)} not deployed"]
    failures = []
    int8, size = group.int8_mean(), group.int8_bytes()
    if target.min_int8_acc is not None and (int8 is None or int8 < target.min_int8_acc - EPS):
        failures.append("int8 acc")
    if target.max_model_bytes is not None and (size is None or size > target.max_model_bytes):
        failures.append("bytes")
    return failures


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


STATUS_RANK = {PASS: 0, PROVISIONAL: 1, BEST_ONLY: 1}
ROW_FIELDS = [
    "target", "status", "dataset", "model", "normalizer", "augmentation", "loader", "precision", "fast_path",
    "recipe", "n",
    "seeds", "final_mean", "final_std", "final_min", "final_ci95_low", "final_ci95_high", "p_reaching_target",
    "best_epoch_mean", "reached_epoch", "time_to_target_s",
    "params", "epochs", "images_per_s", "device_shared_by", "fused_seeds", "hardware", "hardware_class",
    "wall_s_max", "wall_s_median", "wall_s_trimmed_mean", "verified", "verified_runs", "verified_where",
    "deployed", "int8_acc_mean", "int8_change_mean", "int8_model_bytes", "fp32_latency_ms", "int8_latency_ms",
    "int8_peak_activation_bytes", "runs", "superseded_runs",
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
        rank = STATUS_RANK.get(row.status.split(" (")[0], 2) if by == "acc" else 0
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
