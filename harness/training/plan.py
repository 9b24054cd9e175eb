"""From a model name and typed overrides to a frozen, checked run plan.

``make_plan`` is the one place where a run's names are looked up and its defaults applied:
the model spec, its dataset, the recipe with the overrides, the normalizer, augmentation
and loader specs, and the plugin that supplied each. Everything that can be checked before
data is read is checked here (names, the augmentation/dataset match, the loader's imports,
the device, the numbers), so a bad option never costs a loaded dataset or a trained epoch.
Every count has an upper bound too (``check_counts``): threads and workers per core, the
batch size and ``--limit-*`` by the dataset's size, epochs by a cap; a sweep's plans are made
here as well, so its values meet the same bounds. Errors are one-line ``UsageError``s.
It imports torch only to check the device.
"""

from __future__ import annotations

import importlib.util
import math
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Protocol

from cnnbench.choices import (
    COMPILE_MODES,
    OPTIMIZERS,
    PRECISIONS,
    SCHEDULERS,
    TTA,
    TTAS,
    CompileMode,
    Optimizer,
    Precision,
    Scheduler,
)
from cnnbench.datadir import resolve_data_dir
from cnnbench.errors import UsageError
from cnnbench.records import AugmentationSpec, DatasetSpec, LoaderSpec, ModelSpec, NormalizerSpec, Recipe
from cnnbench.registry import Registry

DEFAULT_LOADER = "memory"


@dataclass(frozen=True)
class Overrides:
    """What the command line (or a caller) changes; ``None`` keeps the model's default."""

    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    optimizer: Optimizer | None = None
    scheduler: Scheduler | None = None
    dropout: float | None = None
    nesterov: bool | None = None
    label_smoothing: float | None = None
    warmup_epochs: float | None = None
    ema: float | None = None
    tta: TTA | None = None
    augmentation: str | None = None
    normalizer: str | None = None
    loader: str | None = None
    workers: int = 0
    device: str = "auto"
    precision: Precision = "fp32"
    channels_last: bool = False
    compile: CompileMode = "none"
    val_split: int | None = None  # training images held out for validation (tuning without the test set)
    threads: int | None = None
    data_dir: str | Path | None = None
    results_dir: str | Path = "results"
    limit_train: int | None = None
    limit_test: int | None = None
    save_weights: bool = True
    progress: bool = True
    fused: bool = False  # train the seeds together as one batched computation
    launch: dict[str, Any] | None = None  # how the run was launched (set by bench sweep's launchers)

    def to_json(self) -> dict[str, Any]:
        return {k: str(v) if isinstance(v, Path) else v for k, v in asdict(self).items()}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Overrides:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def recipe_changes(self) -> dict[str, Any]:
        recipe_keys = {f.name for f in fields(Recipe)}
        return {k: v for k, v in asdict(self).items() if k in recipe_keys}


@dataclass(frozen=True)
class RunPlan:
    """Everything a run needs, resolved once; ``train(plan, seed, hooks)`` takes it."""

    model: ModelSpec
    dataset: DatasetSpec
    recipe: Recipe
    normalizer: NormalizerSpec
    augmentation: AugmentationSpec
    loader: LoaderSpec
    device: str  # a torch device string, checked ("cpu", "cuda:0")
    precision: Precision
    data_dir: Path
    results_dir: Path
    channels_last: bool = False  # model and batches in NHWC memory layout
    compile: CompileMode = "none"  # torch.compile mode for the model ("reduce-overhead": CUDA graphs on a GPU)
    val_split: int | None = None  # the first N of a fixed shuffle of the training set, evaluated every epoch
    threads: int | None = None
    loader_options: dict[str, Any] = field(default_factory=dict)
    limit_train: int | None = None
    limit_test: int | None = None
    save_weights: bool = True
    progress: bool = True
    fused: bool = False  # bench run --fused: the seeds train as one batched computation
    plugins: dict[str, Any] = field(default_factory=dict)  # kind -> the plugin that supplied it (JSON)
    overrides: Overrides = field(default_factory=Overrides)  # what the plan was made from (checkpoints)
    plugin_modules: tuple[str, ...] = ()  # --plugin / BENCH_PLUGINS modules (a resume loads them again)
    resumed_at: tuple[int, ...] = ()  # epochs after which this run was resumed
    launch: dict[str, Any] = field(default_factory=dict)  # launcher, job key, jobs sharing the device, node


def make_plan(registry: Registry, model: str, overrides: Overrides | None = None,
              check_device_here: bool = True) -> RunPlan:
    """Resolve and check every name and number of a run; ``UsageError`` on the first problem.

    ``check_device_here=False`` checks only that the device is one torch names (for runs that
    will happen on another machine, such as a Ray worker)."""
    o = overrides or Overrides()
    spec = registry.model(model)
    dataset = registry.dataset(spec.dataset)
    recipe = spec.recipe.updated(**o.recipe_changes())
    check_counts(o, recipe, dataset, here=check_device_here)
    check_recipe(recipe)
    normalizer = registry.normalizer(o.normalizer or spec.normalizer)
    augmentation = registry.augmentation(recipe.augmentation)
    if augmentation.datasets and dataset.name not in augmentation.datasets:
        raise UsageError(
            f"augmentation {augmentation.name!r} is for {', '.join(augmentation.datasets)}, not {dataset.name}"
        )
    loader = registry.loader(o.loader or DEFAULT_LOADER)
    check_loader_available(loader)
    if o.val_split and loader.name == "ffcv":
        raise UsageError("--val-split needs a loader that serves the images it is given (memory or torchvision)")
    results_dir = check_results_dir(Path(o.results_dir))
    if o.precision not in PRECISIONS:
        raise UsageError(f"unknown precision {o.precision!r}; valid precisions: {', '.join(PRECISIONS)}")
    check_compile(o.compile)
    sources = {
        "model": ("models", spec.name), "dataset": ("datasets", dataset.name),
        "normalizer": ("normalizers", normalizer.name), "augmentation": ("augmentations", augmentation.name),
        "loader": ("loaders", loader.name),
    }
    plugins = {}
    for role, (kind, name) in sources.items():
        source = registry.source_of(kind, name)
        plugins[role] = source.as_json() if source else None
    return RunPlan(
        model=spec, dataset=dataset, recipe=recipe, normalizer=normalizer, augmentation=augmentation,
        loader=loader, device=check_device(o.device) if check_device_here else parse_device(o.device),
        precision=o.precision, channels_last=o.channels_last, compile=o.compile, val_split=check_val_split(o, dataset),
        data_dir=resolve_data_dir(o.data_dir), results_dir=results_dir, threads=o.threads,
        loader_options={"workers": o.workers}, limit_train=o.limit_train, limit_test=o.limit_test,
        save_weights=o.save_weights, progress=o.progress, fused=o.fused, plugins=plugins, overrides=o,
        plugin_modules=tuple(registry.pm.explicit), launch=o.launch or {"launcher": None, "jobs_on_device": 1},
    )


def check_results_dir(path: Path) -> Path:
    """Prove files can be written into ``path`` before any data is read, without leaving anything:
    a probe file there, or, when it does not exist yet, a probe folder in its nearest existing parent."""
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    try:
        if not existing.is_dir():
            raise NotADirectoryError(20, f"{existing} is not a folder")
        if existing == path:
            fd, probe = tempfile.mkstemp(dir=path, prefix=".write-test-")
            os.close(fd)
            os.unlink(probe)
        else:
            os.rmdir(tempfile.mkdtemp(dir=existing, prefix=".write-test-"))
    except OSError as exc:
        raise UsageError(f"results dir {path} is not writable: {exc.strerror or exc}") from None
    return path


# --- bounds on counts, checked before anything is built -------------------------------------------

MAX_EPOCHS = 10_000  # every epoch is a line of the record and a checkpoint write
MAX_BATCH_SIZE = 65_536  # more images than any dataset cnnbench ships; one batch's activations of many GB
MAX_IMAGES = 2**31 - 1  # --limit-* of a dataset that does not state its size
THREADS_PER_CORE = 4  # --threads and --workers: more only queue for the cores (and torch crashes on huge counts)
MAX_THREADS = 1024  # the same cap for a run on another machine, whose cores are not known here


def check_count(option: str, value: object, low: int, high: int, why: str = "") -> int:
    """``value``, a whole number in ``[low, high]``, else a ``UsageError`` naming ``option`` (and ``why``:
    the reason for the cap). Sweep files hand over any TOML value, so the type is checked too."""
    if type(value) is not int:
        raise UsageError(f"{option} is {value!r}; it must be a whole number")
    if value < low:
        raise UsageError(f"{option} is {value}; it must be at least {low}")
    if value > high:
        reason = f" ({why})" if why else ""
        raise UsageError(f"{option} is {value:,}; at most {high:,}{reason}")
    return value


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity), not every core of the machine."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def core_cap(here: bool) -> tuple[int, str]:
    """The cap on threads and workers, and why: per core of this machine, or fixed for another machine's run."""
    if not here:
        return MAX_THREADS, "for a run on another machine"
    cores = usable_cores()
    return min(MAX_THREADS, THREADS_PER_CORE * cores), f"{THREADS_PER_CORE} per core, {cores} here"


def recipe_option(name: str, o: Overrides) -> str:
    """How a message names a recipe number: its option when the command line set it, else the recipe field."""
    return f"--{name.replace('_', '-')}" if getattr(o, name, None) is not None else f"recipe {name}"


def check_counts(o: Overrides, recipe: Recipe, dataset: DatasetSpec, here: bool = True) -> None:
    """Every count of a run is a whole number within its cap, known before any data is read or model built:
    epochs, batch size, threads, workers and the ``--limit-*`` image counts (at most the dataset's own)."""
    check_count(recipe_option("epochs", o), recipe.epochs, 1, MAX_EPOCHS,
                "each epoch is kept in the record and written to the checkpoint")
    train = dataset.train_size
    batch_cap, batch_why = (train, f"the {dataset.name} training set has {train:,} images") \
        if 0 < train < MAX_BATCH_SIZE else (MAX_BATCH_SIZE, "one batch's activations would outgrow any device")
    check_count(recipe_option("batch_size", o), recipe.batch_size, 1, batch_cap, batch_why)
    cap, why = core_cap(here)
    if o.threads is not None:
        check_count("--threads", o.threads, 1, cap, why)
    check_count("--workers", o.workers, 0, cap, why)
    for option, limit, size, split in (("--limit-train", o.limit_train, train, "training"),
                                       ("--limit-test", o.limit_test, dataset.test_size, "test")):
        if limit is not None:
            stated = f"{dataset.name} has {size:,} {split} images" if size else ""
            check_count(option, limit, 1, size or MAX_IMAGES, stated)


def is_number(value: object) -> bool:
    """A finite int or float; ``bool`` and strings (a sweep file's ``lr = "fast"``) are not."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def check_recipe(recipe: Recipe) -> None:
    """Numbers and choices a recipe (from a plugin or the command line) must satisfy; ``check_counts``
    bounds its epochs and batch size."""
    if recipe.optimizer not in OPTIMIZERS:
        raise UsageError(f"unknown optimizer {recipe.optimizer!r}; valid optimizers: {', '.join(OPTIMIZERS)}")
    if recipe.scheduler not in SCHEDULERS:
        raise UsageError(f"unknown scheduler {recipe.scheduler!r}; valid schedulers: {', '.join(SCHEDULERS)}")
    check_count("recipe step_size", recipe.step_size, 1, MAX_EPOCHS)
    for name in ("lr", "momentum", "weight_decay", "gamma"):
        value = getattr(recipe, name)
        if not is_number(value) or value < 0:
            raise UsageError(f"recipe {name} is {value}; it must be a finite number >= 0")
    for name in ("dropout", "label_smoothing", "ema", "warmup_epochs"):
        value = getattr(recipe, name)
        if value is not None and not is_number(value):
            raise UsageError(f"recipe {name} is {value!r}; it must be a finite number")
    if type(recipe.nesterov) is not bool:
        raise UsageError(f"recipe nesterov is {recipe.nesterov!r}; it must be true or false")
    if recipe.dropout is not None and not 0 <= recipe.dropout < 1:
        raise UsageError(f"recipe dropout is {recipe.dropout}; it must be in [0, 1)")
    if not 0 <= recipe.label_smoothing < 1:
        raise UsageError(f"recipe label_smoothing is {recipe.label_smoothing}; it must be in [0, 1)")
    if recipe.ema is not None and not 0 < recipe.ema < 1:
        raise UsageError(f"recipe ema is {recipe.ema}; it must be a decay in (0, 1)")
    if recipe.tta not in TTAS:
        raise UsageError(f"unknown test-time augmentation {recipe.tta!r}; valid: {', '.join(TTAS)}")
    if recipe.nesterov and (recipe.optimizer != "sgd" or recipe.momentum <= 0):
        raise UsageError("Nesterov momentum needs the sgd optimizer with momentum > 0 (pass --no-nesterov)")
    if recipe.warmup_epochs is not None:
        if recipe.scheduler != "onecycle":
            raise UsageError(
                f"warmup_epochs is the onecycle schedule's rising phase; the scheduler is {recipe.scheduler}"
            )
        if not 0 < recipe.warmup_epochs < recipe.epochs:
            raise UsageError(f"warmup_epochs is {recipe.warmup_epochs}; it must lie inside the {recipe.epochs} epochs")


def check_val_split(o: Overrides, dataset: DatasetSpec) -> int | None:
    """The held-out count, which must leave training images (known before any data is read)."""
    if o.val_split is None or o.val_split == 0:
        return None
    check_count("--val-split", o.val_split, 1, MAX_IMAGES)
    sizes = [n for n in (o.limit_train, dataset.train_size) if n]
    train = min(sizes) if sizes else None
    if train is not None and o.val_split >= train:
        raise UsageError(f"--val-split {o.val_split} leaves no training images (the training split has {train})")
    return o.val_split


def has_compiler() -> bool:
    """A C++ compiler for ``torch.compile`` to build kernels with."""
    return any(shutil.which(cc) for cc in (os.environ.get("CXX", "g++"), "g++", "c++", "clang++"))


def check_compile(mode: str) -> None:
    """A known ``torch.compile`` mode, and a C++ compiler for it to build kernels with (CPU and GPU alike)."""
    if mode not in COMPILE_MODES:
        raise UsageError(f"unknown compile mode {mode!r}; valid modes: {', '.join(COMPILE_MODES)}")
    if mode != "none" and not has_compiler():
        raise UsageError(f"--compile {mode} needs a C++ compiler (g++ or clang++) for torch.compile; none was found")


class NeedsModules(Protocol):
    """A loader or launcher spec: the modules it imports, and how to install them."""

    @property
    def name(self) -> str: ...
    @property
    def requires(self) -> tuple[str, ...]: ...
    @property
    def install_hint(self) -> str: ...


def check_loader_available(spec: NeedsModules, kind: str = "loader") -> None:
    """A loader's (or launcher's) ``requires`` modules are importable, or a one-line error says how to install them."""
    missing = [m for m in spec.requires if importlib.util.find_spec(m) is None]
    if missing:
        hint = f"; {spec.install_hint}" if spec.install_hint else ""
        raise UsageError(f"{kind} {spec.name!r} needs {', '.join(missing)}, which is not installed{hint}")


def parse_device(name: str) -> str:
    """``auto``, or the torch device string ``name`` names; unknown names are a ``UsageError``."""
    import torch  # lazy: torch

    if name == "auto":
        return name
    try:
        return str(torch.device(name))
    except RuntimeError as exc:
        raise UsageError(f"--device {name!r} is not a device torch knows ({exc})") from exc


def check_device(name: str) -> str:
    """``auto`` -> ``cuda`` when available else ``cpu``; an unusable device is a ``UsageError``."""
    import torch  # lazy: torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(parse_device(name))
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"--device {name}: CUDA is not available on this machine (use cpu or auto)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UsageError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif device.type != "cpu":
        raise UsageError(f"--device {name}: cnnbench trains on cpu or cuda, not {device.type}")
    return str(device)
