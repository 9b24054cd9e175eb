"""Run data: the typed run info, per-epoch stats and run record, and their JSON files.

One JSON file per run in ``results/``, written atomically and never overwritten. Reading is
lenient: a malformed or half-written file is skipped with a warning that names it, and
records of older schema versions are upgraded on read (``RunRecord.from_json``). Reading is
also bounded: a ``*.json`` that is a FIFO, a device or a folder (or a link to one) is skipped
without being opened for reading, and one larger than ``MAX_RECORD_BYTES`` (a link to an endless
file) without being read to its end, so ``bench runs`` and the reports never block or fill memory.

Schema history: 0 had no ``schema_version``; 1 added it; 2 added ``plugins`` (which
plugin and distribution supplied the model, dataset, augmentation, normalizer, loader),
``status`` (complete, stopped or diverged), ``resumed_at`` and ``launch`` (launcher, sweep
job key, how many cnnbench jobs shared the device, node). 3 added ``wall_seconds`` (data loading to the
final evaluation), ``fast_path`` (channels_last, compile, cudnn.benchmark), ``val_images`` and per-epoch
``val_loss``/``val_acc`` (``--val-split``), and the recipe fields ``nesterov``, ``label_smoothing``,
``warmup_epochs``, ``ema`` and ``tta`` (older recipes read as their defaults: none of them was possible).
4 added ``fingerprints``: the SHA-256 of the weights (their tensors, and the file), of every data file
the dataset read, the computing environment (``bench env``), and the record's own digest; older
records read with none and are shown as "not fingerprinted". The git entry of a dirty tree also holds
the digest of its diff. Verification files (``<run_id>.verify.json``) lie beside records and are not records.
Keys a plugin adds to a record at ``cnnbench_run_end`` (``record.extra``) are kept as
top-level keys of the file.
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import re
import secrets
import stat
import types
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

from cnnbench.files import NotARegularFile, read_regular, write_atomic, write_exclusive
from cnnbench.records import Recipe

SCHEMA_VERSION = 4
VERIFICATION_SUFFIX = ".verify.json"  # bench verify's files beside the records (not records)
DEPLOY_SUFFIX = ".deploy.json"  # bench deploy's files beside the records (not records)
REQUIRED = ("run_id", "model", "dataset", "params", "epochs", "final_test_acc", "best_test_acc")
MAX_RECORD_BYTES = 16 * 2**20  # a record is a few kB (15 kB with a 10-class confusion matrix)


# Recipe fields schema 3 added, with the values every older run had.
RECIPE_DEFAULTS_V3 = {"nesterov": False, "label_smoothing": 0.0, "warmup_epochs": None, "ema": None, "tta": "none"}


class RecordWarning(UserWarning):
    """A results file that could not be used."""


@dataclass(frozen=True)
class RunInfo:
    """What a run is, known before its first epoch; lifecycle hooks receive it as ``run``.

    ``recipe`` is the recipe as a dict (``dataclasses.asdict(Recipe)``) with the command
    line's overrides applied; ``device`` is the torch device string (``cpu``, ``cuda:0``).
    """

    run_id: str
    model: str
    dataset: str
    normalizer: str
    augmentation: str
    loader: str
    params: int
    recipe: dict[str, Any]
    seed: int
    device: str
    precision: str


@dataclass(frozen=True)
class EpochStats:
    """One epoch's metrics (``cnnbench_epoch_end`` receives it as ``epoch``).

    Losses are mean NLL per image; accuracies are fractions in [0, 1]; ``lr`` is the learning
    rate at the epoch's start; ``seconds`` covers training and evaluation; ``images_per_s``
    is the training throughput alone.
    """

    epoch: int
    test_acc: float
    train_loss: float | None = None
    train_acc: float | None = None
    test_loss: float | None = None
    lr: float | None = None
    seconds: float | None = None
    images_per_s: float | None = None
    val_loss: float | None = None  # on the --val-split slice of the training set
    val_acc: float | None = None

    def to_json(self) -> dict[str, Any]:
        keys = ("epoch", "train_loss", "train_acc", "test_loss", "test_acc", "lr", "seconds", "images_per_s",
                "val_loss", "val_acc")
        return {k: getattr(self, k) for k in keys if getattr(self, k) is not None or k == "test_acc"}

    @classmethod
    def from_json(cls, data: Any) -> EpochStats:
        if type(data) is not dict:
            raise ValueError(f"an epoch is {type(data).__name__}, not an object")
        epoch = data.get("epoch")
        if type(epoch) is not int or epoch < 1:
            raise ValueError(f"epoch number {epoch!r} is not a positive integer")
        numbers: dict[str, float | None] = {}
        for key in _EPOCH_NUMBERS:
            value = data.get(key)
            if value is not None and not _is_number(value):
                raise ValueError(f"epoch {epoch}: {key} {value!r} is not a number")
            if value is not None and key in _FRACTIONS and not 0 <= value <= 1:
                raise ValueError(f"epoch {epoch}: {key} {value!r} is not a fraction in [0, 1]")
            numbers[key] = value
        test_acc = numbers.pop("test_acc")
        if test_acc is None:
            raise ValueError(f"epoch {epoch}: no test_acc")
        return cls(epoch, test_acc, **numbers)


_EPOCH_NUMBERS = ("test_acc", "train_loss", "train_acc", "test_loss", "lr", "seconds", "images_per_s", "val_loss",
                  "val_acc")
_FRACTIONS = frozenset({"test_acc", "train_acc", "val_acc"})


@dataclass
class RunRecord:
    """Everything one run measured; ``to_json`` gives the file's keys in their fixed order."""

    run_id: str
    model: str
    dataset: str
    params: int
    epochs: list[EpochStats]
    final_test_acc: float
    best_test_acc: float
    normalizer: str = "batch"
    augmentation: str = "none"
    loader: str = "memory"
    recipe: dict[str, Any] = field(default_factory=dict)
    seed: int | None = None
    device: str | None = None
    precision: str = "fp32"
    created: str | None = None
    command: str | None = None
    source: str | None = None
    epochs_run: int | None = None
    best_epoch: int | None = None
    per_class_acc: dict[str, float] = field(default_factory=dict)
    confusion: list[list[int]] | None = None
    train_images: int | None = None
    test_images: int | None = None
    total_seconds: float | None = None
    images_per_s: float | None = None
    stopped_by: str | None = None
    threads: int | None = None
    machine: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    git: dict[str, Any] = field(default_factory=dict)
    weights: str | None = None
    plugins: dict[str, Any] = field(default_factory=dict)
    status: str = "complete"  # complete | stopped (by a hook) | diverged (loss not finite)
    resumed_at: list[int] = field(default_factory=list)  # epochs after which the run was resumed
    launch: dict[str, Any] = field(default_factory=dict)  # launcher, job_key, jobs_on_device, node
    wall_seconds: float | None = None  # data loading to the final evaluation, compilation included
    fast_path: dict[str, Any] = field(default_factory=dict)  # channels_last, compile, cudnn_benchmark
    val_images: int | None = None
    # weights_sha256, weights_file_sha256, data (file -> sha256), environment, record_sha256 (schema 4)
    fingerprints: dict[str, Any] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION
    extra: dict[str, Any] = field(default_factory=dict)  # keys plugins added; saved top level

    # the order of keys in the file (schema 1 order, then what later schemas added)
    ORDER = (
        "schema_version", "run_id", "model", "dataset", "normalizer", "augmentation", "loader", "params", "recipe",
        "seed", "device", "precision", "created", "command", "source", "epochs", "epochs_run", "final_test_acc",
        "best_test_acc", "best_epoch", "per_class_acc", "confusion", "train_images", "test_images", "total_seconds",
        "images_per_s", "stopped_by", "threads", "machine", "versions", "git", "weights", "plugins", "status",
        "resumed_at", "launch", "wall_seconds", "fast_path", "val_images", "fingerprints",
    )

    @property
    def n_epochs(self) -> int:
        return self.epochs_run if self.epochs_run is not None else len(self.epochs)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {}
        for key in self.ORDER:
            value = getattr(self, key)
            data[key] = [e.to_json() for e in value] if key == "epochs" else value
        for key, value in self.extra.items():
            data.setdefault(key, value)
        return data

    @classmethod
    def from_json(cls, data: Any) -> RunRecord:
        """A record from a file's JSON object, upgraded to the current schema; ``ValueError`` says what is wrong."""
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        missing = [key for key in REQUIRED if data.get(key) is None]
        if missing:
            raise ValueError(f"missing {', '.join(missing)}")
        data = upgrade(dict(data))
        known = _RECORD_FIELDS
        kwargs = {k: v for k, v in data.items() if k in known and v is not None}
        kwargs["extra"] = {k: v for k, v in data.items() if k not in known}
        if not isinstance(data["epochs"], list) or not data["epochs"]:
            raise ValueError("epochs is not a non-empty list")
        kwargs["epochs"] = [EpochStats.from_json(e) for e in data["epochs"]]
        _check_types(kwargs)
        return cls(**kwargs)

    def as_dict(self) -> dict[str, Any]:
        """Plain-dict view (``to_json`` without the plugin extras)."""
        data = asdict(self)
        data.pop("extra")
        return data


_RECORD_FIELDS = frozenset(f.name for f in fields(RunRecord)) - {"extra"}


def _is_number(value: Any) -> bool:
    """A finite int or float (``bool`` is not a number here)."""
    return type(value) in (int, float) and math.isfinite(value)


_TYPES: dict[str, tuple[type, ...]] = {
    "run_id": (str,), "model": (str,), "dataset": (str,), "normalizer": (str,), "augmentation": (str,),
    "loader": (str,), "precision": (str,), "params": (int,), "recipe": (dict,), "per_class_acc": (dict,),
    "machine": (dict,), "versions": (dict,), "git": (dict,), "plugins": (dict,), "confusion": (list,),
    "seed": (int,), "epochs_run": (int,), "best_epoch": (int,), "train_images": (int,), "test_images": (int,),
    "threads": (int,), "weights": (str,), "device": (str,), "created": (str,), "command": (str,), "source": (str,),
    "stopped_by": (str,), "status": (str,), "resumed_at": (list,), "launch": (dict,), "fast_path": (dict,),
    "val_images": (int,), "fingerprints": (dict,),
}


def _check_types(kwargs: dict[str, Any]) -> None:
    for key, allowed in _TYPES.items():
        value = kwargs.get(key)
        if value is not None and (not isinstance(value, allowed) or isinstance(value, bool)):
            raise ValueError(f"{key} is {type(value).__name__}, expected {allowed[0].__name__}")
    for key in ("final_test_acc", "best_test_acc"):
        if not _is_number(kwargs[key]) or not 0 <= kwargs[key] <= 1:
            raise ValueError(f"{key} {kwargs[key]!r} is not a fraction in [0, 1]")
    weights = kwargs.get("weights")
    if weights is not None and (Path(weights).name != weights or weights in (".", "..")):
        raise ValueError(f"weights {weights!r} is not a file name in the results directory")
    for key in ("params", *_COUNTS):
        if kwargs.get(key) is not None and kwargs[key] < 0:
            raise ValueError(f"{key} {kwargs[key]} is negative")
    _check_recipe(kwargs.get("recipe", {}))
    for key in ("total_seconds", "images_per_s", "wall_seconds"):
        if kwargs.get(key) is not None and not _is_number(kwargs[key]):
            raise ValueError(f"{key} {kwargs[key]!r} is not a number")
    if not all(isinstance(k, str) and _is_number(v) for k, v in kwargs.get("per_class_acc", {}).items()):
        raise ValueError("per_class_acc is not a map of class names to numbers")
    confusion = kwargs.get("confusion")
    if confusion is not None and not all(type(row) is list and all(type(v) is int for v in row) for row in confusion):
        raise ValueError("confusion is not a list of integer rows")


_COUNTS = ("seed", "epochs_run", "best_epoch", "train_images", "test_images", "threads", "val_images")
_RECIPE_TYPES = get_type_hints(Recipe)


def _fits(value: object, hint: object) -> bool:
    """Whether a JSON value can stand where a ``Recipe`` field of type ``hint`` is (a Literal: any string)."""
    origin = get_origin(hint)
    if origin in (Union, types.UnionType):
        return any(_fits(value, arg) for arg in get_args(hint))
    if origin is Literal:
        return any(type(value) is type(arg) for arg in get_args(hint))
    if hint is float:
        return _is_number(value)
    if hint is type(None):
        return value is None
    return type(value) is hint if isinstance(hint, type) else True


def _check_recipe(recipe: dict[str, Any]) -> None:
    """The recipe's known fields have their ``Recipe`` types (reports format them: a text lr breaks a table)."""
    for key, value in recipe.items():
        hint = _RECIPE_TYPES.get(key)
        if hint is not None and not _fits(value, hint):
            raise ValueError(f"recipe {key} {value!r} is not of the type {_type_text(hint)}")


def _type_text(hint: object) -> str:
    if get_origin(hint) in (Union, types.UnionType):
        return " or ".join(_type_text(arg) for arg in get_args(hint))
    if get_origin(hint) is Literal:
        return "str"
    return "null" if hint is type(None) else getattr(hint, "__name__", str(hint))


def upgrade(record: dict[str, Any]) -> dict[str, Any]:
    """Bring an older record's JSON up to the current schema (version 0 had no version field)."""
    version = record.get("schema_version", 0)
    if not isinstance(version, int) or isinstance(version, bool):
        raise ValueError(f"schema_version {version!r} is not an integer")
    if version > SCHEMA_VERSION:
        raise ValueError(f"schema version {version} is newer than this cnnbench reads ({SCHEMA_VERSION})")
    record.setdefault("normalizer", "batch")
    record.setdefault("augmentation", "none")
    record.setdefault("loader", "memory")
    record.setdefault("precision", "fp32")
    record.setdefault("per_class_acc", {})
    record.setdefault("plugins", {})  # 1 -> 2: unknown for older runs
    record.setdefault("status", "complete")  # 1 -> 2: older runs had no divergence check or resume
    record.setdefault("resumed_at", [])
    record.setdefault("launch", {})
    record.setdefault("fast_path", {})  # 2 -> 3: older runs used none of the options
    record.setdefault("fingerprints", {})  # 3 -> 4: older runs are "not fingerprinted"
    if version < 3 and isinstance(record.get("recipe"), dict) and record["recipe"]:
        record["recipe"] = {**RECIPE_DEFAULTS_V3, **record["recipe"]}  # 2 -> 3: these could not be set before
    record["schema_version"] = SCHEMA_VERSION
    return record


def new_run_id(model: str, seed: int, now: datetime | None = None) -> str:
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{model}-s{seed}-{secrets.token_hex(4)}"


def record_digest(data: dict[str, Any]) -> str:
    """SHA-256 of a record's JSON object without its own ``fingerprints.record_sha256``: any later
    edit of the file (an accuracy, the recipe) no longer matches it. Not a signature: it pins what
    was written, for ``bench check``."""
    copy = dict(data)
    prints = copy.get("fingerprints")
    if isinstance(prints, dict):
        copy["fingerprints"] = {k: v for k, v in prints.items() if k != "record_sha256"}
    text = json.dumps(copy, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()


def record_json(record: RunRecord) -> bytes:
    """The file's bytes: strict JSON (a NaN or infinity is refused, never written as a bare token).
    A fingerprinted record gets its own digest (``record_digest``) as it is written."""
    data = record.to_json()
    if record.fingerprints:
        record.fingerprints["record_sha256"] = record_digest(data)
        data = record.to_json()
    return (json.dumps(data, indent=1, allow_nan=False) + "\n").encode()


def is_record_file(path: Path) -> bool:
    """``*.json`` in a results folder, but not a verification or deployment file."""
    return path.suffix == ".json" and not path.name.endswith((VERIFICATION_SUFFIX, DEPLOY_SUFFIX))


def write_record(record: RunRecord, results_dir: Path, weights: bytes | None = None) -> Path:
    """Write ``record`` as ``<results_dir>/<run_id>.json`` (never overwriting); returns the path.

    With ``weights``, the file ``record.weights`` is written first, and removed if the record
    cannot be written: weights never outlive a failed record write. The weights replace a file of
    the same name: only this run has its id, and a run killed between the two writes left weights
    without a record that its resume must be able to replace. A record that is not strict JSON
    raises ``TypeError`` / ``ValueError`` before anything is written.
    """
    data = record_json(record)
    weights_path = Path(results_dir) / record.weights if weights is not None and record.weights else None
    if weights_path is not None and weights is not None:
        write_atomic(weights_path, weights)
    path = Path(results_dir) / f"{record.run_id}.json"
    try:
        write_exclusive(path, data)
    except BaseException:
        if weights_path is not None:
            weights_path.unlink(missing_ok=True)
        raise
    return path


@dataclass(frozen=True)
class LoadedRecord:
    path: Path
    data: RunRecord


def read_record(path: Path) -> RunRecord:
    """Read and validate one record; raises ``ValueError`` saying what is wrong.

    Never blocks and never reads more than ``MAX_RECORD_BYTES``: what is not a regular file is refused
    before a byte is read."""
    try:
        raw = read_regular(path, MAX_RECORD_BYTES)
    except NotARegularFile:
        raise ValueError(f"{file_kind(path)}, not a regular file; a run record is a plain file") from None
    except OSError as exc:
        if exc.errno == errno.EFBIG:
            raise ValueError(f"larger than {MAX_RECORD_BYTES // 2**20} MiB; a run record is a few kB") from None
        if isinstance(exc, FileNotFoundError) and os.path.islink(path):
            raise ValueError(f"a link to {os.readlink(path)}, which does not exist") from None
        raise ValueError(f"cannot be read ({exc.strerror or exc})") from None
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise ValueError(f"not readable JSON ({_json_problem(exc)})") from None
    return RunRecord.from_json(data)


def _json_problem(exc: Exception) -> str:
    if isinstance(exc, json.JSONDecodeError):
        return str(exc)
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    if isinstance(exc, UnicodeDecodeError):
        return f"not UTF-8 text at byte {exc.start}"
    return "a number with more digits than Python converts"  # int_max_str_digits


def file_kind(path: Path) -> str:
    """``a FIFO``, ``a folder``, ``a device`` ...: what a path that is not a regular file is (links followed)."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return "not readable"
    kinds = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISDIR, "a folder"), (stat.S_ISCHR, "a character device"),
             (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))
    return next((name for test, name in kinds if test(mode)), "not a plain file")


def iter_records(results_dir: Path) -> Iterator[LoadedRecord]:
    """Every usable record under ``results_dir``, oldest first by file name; bad files (malformed, too
    large, FIFOs and other non-files) warn with a line naming them and are skipped."""
    root = Path(results_dir)
    if not root.is_dir():
        return
    for path in sorted(p for p in root.glob("*.json") if is_record_file(p)):
        try:
            yield LoadedRecord(path, read_record(path))
        except ValueError as exc:
            warnings.warn(f"skipping {path}: {exc}", RecordWarning, stacklevel=2)


# --- how a record is described (leaderboard, reports, bench speed) ---------------------------


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
