"""``bench verify``: train a recorded run again from its record and compare every number.

The plan is rebuilt from the record alone (model, normalizer, augmentation, loader, the whole
recipe, seed, device, precision, fast path, threads, data subset), the run is trained for its
first epochs (or to the end with ``full``) in a temporary folder, and each recorded per-epoch
number is compared with the new one. Where the computing environment is the record's (same CPU
model and flags, Python, torch, torchvision, numpy, thread count, device, data files), a
deterministic CPU run must match to the last bit; elsewhere the numbers must agree within the
stated ``TOLERANCE``. The verdict goes into a verification file beside the record.
"""

from __future__ import annotations

import dataclasses
import math
import platform
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cnnbench import __version__, hookimpl
from cnnbench.datadir import resolve_data_dir
from cnnbench.errors import PluginError, RecordError, UsageError
from cnnbench.records import ModelSpec, Recipe
from cnnbench.registry import Registry, make_plugin_manager
from cnnbench.runrecord import EpochStats, RunInfo, RunRecord
from cnnbench.training import provenance
from cnnbench.training.fingerprint import dataset_sha256, weights_sha256
from cnnbench.training.plan import Overrides, RunPlan, make_plan
from cnnbench.verify.store import Verdict

COMPARED = ("train_loss", "train_acc", "test_loss", "test_acc", "lr", "val_loss", "val_acc")
# Where the environment differs: accuracies within half a point, losses within 5% (or 0.01), the
# learning rate within float rounding (the schedule does not depend on the hardware).
TOLERANCE: dict[str, float] = {"acc_abs": 0.005, "loss_rel": 0.05, "loss_abs": 0.01, "lr_rel": 1e-6}
ENVIRONMENT_KEYS = ("python", "torch", "torchvision", "numpy", "cpu", "cpu_flags_sha256", "threads", "device",
                    "cuda", "cudnn", "gpu")


@dataclass(frozen=True)
class Difference:
    epoch: int
    field: str
    recorded: float | None
    replayed: float | None

    def as_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class _StopAfter:
    """A lifecycle plugin that ends the replay after ``epochs`` epochs (the schedule stays the full run's)."""

    def __init__(self, epochs: int) -> None:
        self.epochs = epochs

    @hookimpl
    def cnnbench_epoch_end(self, run: RunInfo, epoch: EpochStats) -> bool | None:
        return True if epoch.epoch >= self.epochs else None


# --- the environment ---------------------------------------------------------------------------


def recorded_environment(record: RunRecord) -> dict[str, Any]:
    """The environment a record states: its fingerprint where it has one, else versions and machine."""
    stored = record.fingerprints.get("environment") if record.fingerprints else None
    if isinstance(stored, dict):
        return dict(stored)
    env: dict[str, Any] = {k: v for k, v in record.versions.items() if k in ENVIRONMENT_KEYS}
    env.update(cpu=record.machine.get("cpu"), threads=record.threads, device=record.device or "cpu")
    if record.machine.get("gpu"):
        env["gpu"] = record.machine["gpu"]
    return env


def environment_differences(recorded: dict[str, Any], here: dict[str, Any]) -> list[str]:
    """``"torch 2.14.1 -> 2.15.0"`` for every key the record states and this machine answers differently."""
    return [
        f"{key} {recorded.get(key)} -> {here.get(key)}"
        for key in ENVIRONMENT_KEYS
        if key in recorded and recorded.get(key) != here.get(key)
    ]


def data_differences(record: RunRecord, here: dict[str, str]) -> list[str]:
    recorded = record.fingerprints.get("data") if record.fingerprints else None
    if not isinstance(recorded, dict):
        return []
    return [f"data file {name} differs" for name, digest in recorded.items() if here.get(name) != digest]


# --- the plan ------------------------------------------------------------------------------------


def registry_for(record: RunRecord, quiet: bool = True) -> Registry:
    """The registry with the plugins the run used: the built-ins, entry points, and the modules its
    record names that neither provides; ``quiet``: without the console's per-epoch lines."""
    modules = sorted({
        str(source["module"]) for source in record.plugins.values()
        if isinstance(source, dict) and source.get("module")
        and not str(source["module"]).startswith("cnnbench.plugins")
    })
    try:
        return Registry(make_plugin_manager(modules, blocked=("console",) if quiet else ()))
    except PluginError as exc:
        raise PluginError(f"run {record.run_id} needs plugin code that does not load here: {exc}") from None


def overrides_for(record: RunRecord, data_dir: Path, results_dir: Path, dataset_sizes: tuple[int, int]) -> Overrides:
    """Overrides that rebuild the run: every recorded setting, the data subset it trained and tested on."""
    recipe, fast = record.recipe, record.fast_path or {}
    train_size, test_size = dataset_sizes
    used_train = (record.train_images or 0) + (record.val_images or 0)
    return Overrides(
        batch_size=recipe.get("batch_size"), lr=recipe.get("lr"), optimizer=recipe.get("optimizer"),
        scheduler=recipe.get("scheduler"), dropout=recipe.get("dropout"), nesterov=recipe.get("nesterov"),
        label_smoothing=recipe.get("label_smoothing"), warmup_epochs=recipe.get("warmup_epochs"),
        ema=recipe.get("ema"), tta=recipe.get("tta"), augmentation=record.augmentation,
        normalizer=record.normalizer, loader=record.loader, device=record.device or "cpu",
        precision=record.precision,  # type: ignore[arg-type]  # a recorded Precision
        channels_last=bool(fast.get("channels_last")), compile=fast.get("compile") or "none",
        val_split=record.val_images, threads=record.threads, data_dir=data_dir, results_dir=results_dir,
        limit_train=used_train if 0 < used_train < train_size else None,
        limit_test=record.test_images if record.test_images and record.test_images < test_size else None,
        save_weights=True, progress=False,
    )


def plan_for(record: RunRecord, registry: Registry, data_dir: Path, results_dir: Path) -> RunPlan:
    """The run's plan, with the recorded recipe itself (not the plugin's current default)."""
    if record.seed is None:
        raise RecordError(f"run {record.run_id} records no seed; it cannot be trained again")
    spec = model_of(record, registry)
    dataset = registry.dataset(spec.dataset)
    plan = make_plan(registry, record.model,
                     overrides_for(record, data_dir, results_dir, (dataset.train_size, dataset.test_size)))
    known = {f.name for f in dataclasses.fields(Recipe)}
    unknown = sorted(set(record.recipe) - known)
    if unknown:
        raise RecordError(
            f"run {record.run_id}: its recipe has fields this cnnbench does not know: {', '.join(unknown)}"
        )
    try:
        recipe = Recipe(**record.recipe)
    except TypeError as exc:
        raise RecordError(f"run {record.run_id}: its recipe cannot be read ({exc})") from None
    return dataclasses.replace(plan, recipe=recipe)


def model_of(record: RunRecord, registry: Registry) -> ModelSpec:
    """The run's model as registered here; one line naming the plugin it came from when it is not."""
    try:
        return registry.model(record.model)
    except UsageError:
        source = record.plugins.get("model") or {}
        raise PluginError(
            f"run {record.run_id} used model {record.model!r} from plugin {source.get('plugin', '?')!r} "
            f"({source.get('distribution') or 'not a distribution'} {source.get('version') or ''}), "
            "which is not installed here"
        ) from None


def rebuilt_model(record: RunRecord, registry: Registry) -> Any:
    """The run's model as the plugin builds it now, refused in one line when its parameter count changed."""
    model_of(record, registry)
    model = registry.create_model(record.model, record.normalizer, record.recipe.get("dropout"))
    params = sum(p.numel() for p in model.parameters())
    if params != record.params:
        raise RecordError(f"model {record.model!r} changed since run {record.run_id}: it has {params:,} "
                          f"parameters now, {record.params:,} recorded")
    return model


def check_model_matches(record: RunRecord, registry: Registry, weights: Path | None) -> None:
    """The model the plugin builds now has the recorded parameter count and the saved weights' names."""
    model = rebuilt_model(record, registry)
    if weights is not None:
        saved = set(load_weights(weights))
        now = set(model.state_dict())
        if saved != now:
            missing, extra = sorted(now - saved)[:3], sorted(saved - now)[:3]
            raise RecordError(f"model {record.model!r} changed since run {record.run_id}: its weights' names "
                              f"differ (not saved: {', '.join(missing) or '-'}; saved only: {', '.join(extra) or '-'})")


def load_weights(path: Path) -> dict[str, Any]:
    import torch  # lazy: torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many kinds for a damaged or foreign file
        raise RecordError(f"{path}: not a readable weights file ({type(exc).__name__})") from None
    if not isinstance(state, dict):
        raise RecordError(f"{path}: not a state dict")
    return state


# --- comparing -----------------------------------------------------------------------------------


def within(field: str, recorded: float, replayed: float) -> bool:
    if field.endswith("_acc"):
        return abs(recorded - replayed) <= TOLERANCE["acc_abs"]
    if field.endswith("_loss"):
        return abs(recorded - replayed) <= max(TOLERANCE["loss_abs"], TOLERANCE["loss_rel"] * abs(recorded))
    return math.isclose(recorded, replayed, rel_tol=TOLERANCE["lr_rel"], abs_tol=1e-12)


def compare_epochs(recorded: list[EpochStats], replayed: list[EpochStats], epochs: int,
                   exact: bool) -> tuple[int, list[Difference]]:
    """How many numbers were compared over the first ``epochs`` epochs, and those that differ
    (any difference when ``exact``, else those outside the tolerance)."""
    compared, differences = 0, []
    for old, new in zip(recorded[:epochs], replayed[:epochs], strict=False):
        for field in COMPARED:
            a, b = getattr(old, field), getattr(new, field)
            if a is None and b is None:
                continue
            compared += 1
            same = a is not None and b is not None and (a == b if exact else within(field, float(a), float(b)))
            if not same:
                differences.append(Difference(old.epoch, field, a, b))
    if len(replayed) < min(epochs, len(recorded)):
        differences.append(Difference(len(replayed) + 1, "epoch", None, None))
    return compared, differences


def largest_differences(recorded: list[EpochStats], replayed: list[EpochStats]) -> dict[str, float]:
    """The largest absolute difference of each compared number over the epochs (0.0: identical)."""
    largest: dict[str, float] = {}
    for old, new in zip(recorded, replayed, strict=False):
        for field in COMPARED:
            a, b = getattr(old, field), getattr(new, field)
            if a is not None and b is not None:
                largest[field] = max(largest.get(field, 0.0), abs(float(a) - float(b)))
    return largest


# --- one verification ----------------------------------------------------------------------------


def verify_run(record: RunRecord, record_path: Path, data_dir: str | Path | None, epochs: int | None,
               progress: bool = False) -> dict[str, Any]:
    """Train ``record``'s run again for ``epochs`` epochs (None: all) and compare; returns the verification."""
    from cnnbench.training.train import train  # lazy: torch

    full = epochs is None
    want = record.n_epochs if full else min(epochs or 1, record.n_epochs)
    weights = record_path.parent / record.weights if record.weights else None
    if weights is not None and not weights.is_file():
        weights = None
    registry = registry_for(record, quiet=not progress)
    check_model_matches(record, registry, weights)
    data = resolve_data_dir(data_dir)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="cnnbench-verify-") as scratch:
        plan = dataclasses.replace(plan_for(record, registry, data, Path(scratch)), progress=progress)
        here = provenance.environment(plan.device, record.threads)
        data_here = dataset_sha256(plan.dataset, plan.data_dir)
        if not full:
            registry.pm.register(_StopAfter(want), name="cnnbench-verify-stop")
        replayed, replayed_path = train(plan, record.seed or 0, registry.hook)
        replayed_weights = replayed_path.parent / replayed.weights if replayed.weights else None
        weights_check = None
        if full:
            weights_check = compare_weights(record, weights, replayed_weights, weights_sha256)
    seconds = time.perf_counter() - started
    recorded_env = recorded_environment(record)
    differences_env = [*environment_differences(recorded_env, here), *data_differences(record, data_here)]
    exact = not differences_env
    compared, differences = compare_epochs(record.epochs, replayed.epochs, want, exact)
    if full:
        for field in ("final_test_acc", "best_test_acc"):
            a, b = getattr(record, field), getattr(replayed, field)
            compared += 1
            if (a != b) if exact else not within("test_acc", a, b):
                differences.append(Difference(record.n_epochs, field, a, b))
    verdict: Verdict
    weights_ok = weights_check is None or weights_check.get("match") in (True, None) or not exact
    if differences or not weights_ok:
        verdict = "not reproduced"
    else:
        verdict = "reproduced exactly" if exact else "reproduced within tolerance"
    return {
        "run_id": record.run_id, "verdict": verdict, "when": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "mode": "full" if full else f"first {want} of {record.n_epochs} epochs", "epochs_compared": want,
        "numbers_compared": compared, "differences": [d.as_json() for d in differences[:50]],
        "largest_differences": largest_differences(record.epochs[:want], replayed.epochs[:want]),
        "replayed_epochs": [e.to_json() for e in replayed.epochs[:want]],
        "differences_total": len(differences), "exact_required": exact,
        "tolerance": None if exact else TOLERANCE, "weights": weights_check,
        "environment": {"recorded": recorded_env, "here": here, "differences": differences_env},
        "code": {"recorded": record.git, "here": provenance.git_commit(), "cnnbench": __version__},
        "host": platform.node(), "seconds": round(seconds, 2), "command": provenance.command_line(),
    }


def compare_weights(record: RunRecord, recorded: Path | None, replayed: Path | None,
                    digest: Any) -> dict[str, Any]:
    """The replay's final weights (SHA-256 of the tensors) against the record's digest, where it has
    one, and against the weights file beside the record: both must be the replay's."""
    stored = (record.fingerprints or {}).get("weights_sha256")
    on_disk = digest(load_weights(recorded)) if recorded is not None else None
    new = digest(load_weights(replayed)) if replayed is not None else None
    expected = [d for d in (stored, on_disk) if d is not None]
    match = None if new is None or not expected else all(d == new for d in expected)
    return {"recorded_sha256": stored, "file_sha256": on_disk, "replayed_sha256": new, "match": match}
