"""Small typed records that plugins return from the registration hooks.

Every record is a frozen dataclass. Anything heavy (a torch model, a data file) is
reached through a *factory*: either a callable or a ``"module:attribute"`` string
that is imported only when the thing is actually built. That keeps ``bench list``
free of torch.
"""

from __future__ import annotations

import fnmatch
import importlib
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from typing import Any, Literal

from cnnbench.choices import TTA, AugmentationKind, Optimizer, Scheduler

Factory = Callable[..., Any] | str


def resolve(factory: Factory) -> Callable[..., Any]:
    """Turn a ``"pkg.module:attr"`` string into the object it names (callables pass through)."""
    if callable(factory):
        return factory
    module_name, _, attr = factory.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in attr.split(".") if attr else []:
        obj = getattr(obj, part)
    return obj


@dataclass(frozen=True)
class Recipe:
    """How a model is trained by default; every field can be overridden on the command line."""

    epochs: int
    batch_size: int = 128
    optimizer: Optimizer = "sgd"
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 0.0
    scheduler: Scheduler = "none"
    step_size: int = 1  # StepLR
    gamma: float = 0.1  # StepLR
    augmentation: str = "none"
    dropout: float | None = None  # passed to the model factory when not None
    nesterov: bool = False  # SGD with Nesterov momentum
    label_smoothing: float = 0.0  # training loss only; test losses are plain NLL
    warmup_epochs: float | None = None  # onecycle's rising phase in epochs (None: torch's 30% of the run)
    ema: float | None = None  # decay of an exponential moving average of the weights, which is evaluated and saved
    tta: TTA = "none"  # flip: the mean probability of the image and its mirror

    def updated(self, **overrides: Any) -> Recipe:
        """A copy with the non-None overrides applied."""
        known = {f.name for f in fields(self)}
        return replace(self, **{k: v for k, v in overrides.items() if v is not None and k in known})


@dataclass(frozen=True)
class ModelSpec:
    """A network: ``factory(norm=..., dropout=...)`` returns an ``nn.Module``.

    ``params`` is the parameter count the source document states (with batch norm);
    a unit test builds every model and checks it.
    """

    name: str
    dataset: str
    factory: Factory
    description: str
    source: str  # which seed document, e.g. "seed 004, step 4"
    params: int
    recipe: Recipe
    normalizer: str = "batch"  # the normalizer the document used


@dataclass(frozen=True)
class DatasetSpec:
    """A labelled image dataset held in memory as uint8 tensors.

    ``load(data_dir, split)`` returns ``(images, labels)``: uint8 ``N x C x H x W`` and
    int64 ``N``. ``split`` is ``"train"`` or ``"test"``. ``files`` are the paths (relative to the
    data folder) that ``load`` reads; every record stores their SHA-256, so a result names its data.
    """

    name: str
    load: Factory
    description: str
    image_shape: tuple[int, int, int]  # C, H, W
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    class_names: tuple[str, ...] = ()
    train_size: int = 0
    test_size: int = 0
    files: tuple[str, ...] = ()


@dataclass(frozen=True)
class AugmentationSpec:
    """Training-time augmentation.

    ``kind == "batch"``: ``factory(dataset_spec)`` returns ``fn(x, generator) -> x`` working on a
    float batch in [0, 1] (``N x C x H x W``) on the run's device, before normalization.
    ``kind == "sample"``: ``factory(dataset_spec)`` returns ``fn(image) -> image`` on one
    ``H x W x C`` uint8 numpy array, as per-sample pipelines do.
    """

    name: str
    factory: Factory
    description: str
    kind: AugmentationKind
    datasets: tuple[str, ...] = ()  # empty: any dataset


@dataclass(frozen=True)
class NormalizerSpec:
    """``factory(channels)`` returns the normalization layer a model puts after a conv."""

    name: str
    factory: Factory
    description: str


@dataclass(frozen=True)
class LoaderSpec:
    """``factory(request: LoaderRequest)`` returns an iterable of ``(x, y)`` batches with ``len``."""

    name: str
    factory: Factory
    description: str
    requires: tuple[str, ...] = ()  # importable modules it needs, checked before use
    install_hint: str = ""


@dataclass(frozen=True)
class Target:
    """A goal: accuracy at or above ``min_test_acc`` with fewer than ``params_below`` parameters in at
    most ``max_epochs`` epochs (None: any).

    ``max_seconds`` bounds each run's wall time (data loading to the final evaluation) per hardware
    class: ``(("cpu-2", 120.0), ("gpu-h100", 10.0))``; the record's hardware class (``cpu-<threads>``
    or ``gpu-<model>``, matched as a shell pattern) decides which bound applies, and a run on hardware
    the target has no bound for does not pass. ``allow_tta=False`` refuses test-time augmentation.

    ``min_seeds``: a configuration with fewer distinct seeds is "provisional", not "pass", however
    good its mean. ``confidence`` (e.g. 0.95): the one-sided t-test that the mean reaches the target
    must also give p <= 1 - confidence (None: the p-value is shown, not required).

    Deployment budgets, checked on ``bench deploy``'s measurements of every seed: ``min_int8_acc``, the
    mean int8 top-1 (a fraction); ``max_model_bytes``, the largest int8 model's stored bytes. A target
    about int8 alone sets ``min_test_acc`` to 0 (no fp32 requirement)."""

    id: str
    dataset: str
    min_test_acc: float  # fraction in [0, 1]
    params_below: int
    max_epochs: int | None
    source: str
    description: str = ""
    max_seconds: tuple[tuple[str, float], ...] = ()
    allow_tta: bool = True
    min_seeds: int = 1
    confidence: float | None = None
    min_int8_acc: float | None = None
    max_model_bytes: int | None = None

    def rule(self) -> str:
        epochs = f", <= {self.max_epochs} epochs" if self.max_epochs is not None else ""
        deploy = (f", int8 >= {self.min_int8_acc:.2%} test acc" if self.min_int8_acc is not None else "") + (
            f", int8 model <= {self.max_model_bytes:,} bytes" if self.max_model_bytes is not None else "")
        budget = ", ".join(f"{seconds:g} s on {hardware}" for hardware, seconds in self.max_seconds)
        extra = (f", <= {budget} per run" if budget else "") + ("" if self.allow_tta else ", no TTA")
        if self.min_seeds > 1:
            extra += f", >= {self.min_seeds} seeds"
        if self.confidence is not None:
            extra += f", mean above at {self.confidence:.0%} confidence"
        accuracy = f">= {self.min_test_acc:.2%} test acc, " if self.min_test_acc > 0 else ""
        return f"{accuracy}< {self.params_below:,} params{epochs}{deploy}{extra}"

    def time_budget(self, hardware_class: str) -> float | None:
        """The wall-seconds bound for runs on ``hardware_class`` (None: the target has none for it)."""
        return next((s for pattern, s in self.max_seconds if fnmatch.fnmatchcase(hardware_class, pattern)), None)


@dataclass
class LoaderRequest:
    """What a loader plugin is asked to serve: one split of one dataset."""

    dataset: DatasetSpec
    split: str
    images: Any  # uint8 tensor N x C x H x W (CPU)
    labels: Any  # int64 tensor N (CPU)
    batch_size: int
    shuffle: bool
    seed: int
    device: Any  # torch.device
    augmentation: AugmentationSpec | None = None
    drop_last: bool = False
    data_dir: str = ""
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Job:
    """One run of a sweep: a model, its overrides (as ``Overrides`` fields) and a seed.

    ``key`` identifies the job across sweeps (configuration + seed; output-only settings such
    as the results folder or the thread count are not part of it), so a repeated sweep skips
    jobs whose records exist, and its claim file (``KEY.claim``) keeps two sweeps from training it
    at once.
    """

    key: str
    model: str
    seed: int
    overrides: dict[str, Any]
    plugin_modules: tuple[str, ...] = ()
    # "verify": train the recorded run ``overrides["run_id"]`` again and compare (``bench verify --launcher``)
    task: Literal["train", "verify"] = "train"

    def label(self) -> str:
        if self.task == "verify":
            return f"verify {self.overrides.get('run_id')}"
        changed = ", ".join(f"{k}={v}" for k, v in sorted(self.overrides.items()) if v is not None)
        return f"{self.model} seed {self.seed}" + (f" ({changed})" if changed else "")


@dataclass(frozen=True)
class JobResult:
    """What a launcher reports for one job: its record's path (None when it failed) and its log."""

    job: Job
    ok: bool
    record_path: str | None = None
    error: str = ""
    log_path: str | None = None
    attempts: int = 1


@dataclass(frozen=True)
class LauncherSpec:
    """A way to run the jobs of a sweep (``bench sweep --launcher NAME``), after Hydra's launcher plugins.

    ``factory`` is a ``cnnbench.launcher.Launcher`` subclass (or a ``"module:Class"`` string naming
    one): the class is the launcher's contract, and its ``Options`` dataclass its settings, which
    become ``bench sweep --NAME-...`` options. ``name`` is lowercase letters, digits and '-'.
    """

    name: str
    factory: Factory
    description: str
    requires: tuple[str, ...] = ()  # importable modules it needs, checked before the sweep starts
    install_hint: str = ""


@dataclass(frozen=True)
class LaunchOptions:
    """What every launcher is told, whichever it is: where records and logs go, the data folder, how
    many jobs at once, whether to show progress. A launcher's own settings are its ``Options``."""

    results_dir: str
    log_dir: str
    data_dir: str | None = None
    jobs: int | None = None  # at most this many jobs at once (None: the launcher's own default)
    progress: bool = True
