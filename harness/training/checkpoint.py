"""Checkpoints: what a run needs to continue after a kill, written after every epoch.

``<results_dir>/<run_id>.ckpt`` (the leaderboard reads only ``*.json``) holds the model,
optimizer and scheduler states, the epochs so far, and every random state the run draws
from: Python's, NumPy's, torch's CPU and CUDA generators and the loaders' own (order and
augmentation). ``epoch.SeedRun`` writes its fields; this module stores them atomically (temp file,
fsync, rename), reads them back (a bounded read of a regular file, then ``torch.load(weights_only=True)``,
so a tampered file cannot run code) and checks every field before a run trusts them. A completed run
removes its checkpoint.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import io
import os
import pickle
import random
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from cnnbench.choices import RUN_STATUSES
from cnnbench.errors import RecordError, UsageError
from cnnbench.files import NotARegularFile, read_regular, write_atomic
from cnnbench.runrecord import EpochStats, RunInfo
from cnnbench.training.ema import WeightEMA

FORMAT = 1
SUFFIX = ".ckpt"
# Far above what a small CNN's checkpoint holds (weights, optimizer state and an EMA copy: ~16 bytes a
# parameter, 64M parameters); a file above it is refused rather than read into memory.
MAX_CHECKPOINT_BYTES = 1 << 30
STATUSES = ("running", *RUN_STATUSES)


def checkpoint_path(results_dir: Path, run_id: str) -> Path:
    return Path(results_dir) / f"{run_id}{SUFFIX}"


def random_states(device: str) -> dict[str, Any]:
    """Python's, NumPy's and torch's generators, and the CUDA generator of the run's own device only
    (touching every GPU would create a context on each, and a resume may see fewer)."""
    version, mt, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = cast(tuple[str, np.ndarray, int, int, float], np.random.get_state())
    run_device = torch.device(device)
    return {
        "python": [version, list(mt), gauss],
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
        "torch": torch.get_rng_state(),
        "cuda": [torch.cuda.get_rng_state(run_device)] if run_device.type == "cuda" else [],
    }


def set_random_states(states: dict[str, Any], device: str) -> None:
    version, mt, gauss = states["python"]
    random.setstate((version, tuple(mt), gauss))
    kind, keys, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.device(device).type == "cuda":
        torch.cuda.set_rng_state(states["cuda"][0], torch.device(device))


def loader_state(loader: Any) -> dict[str, Any] | None:
    return loader.state_dict() if hasattr(loader, "state_dict") else None


def on_cpu(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A state dict's tensors, detached and on the CPU (what a checkpoint or a weights file holds)."""
    return {k: v.detach().cpu() for k, v in state.items()}


def ema_state(ema: WeightEMA | None) -> dict[str, Any] | None:
    if ema is None:
        return None
    state = ema.state_dict()
    return {"module": on_cpu(state["module"]), "steps": state["steps"]}


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    write_atomic(path, buffer.getvalue())


# --- reading ----------------------------------------------------------------------------------


def load_torch_file(path: Path, limit: int, what: str) -> Any:
    """The contents of a file ``torch.save`` wrote, loaded with ``weights_only=True``.

    Anything else is one ``RecordError`` line in cnnbench's words, ``<path>: not <what> (<why>)``: a FIFO
    or device (never opened for a blocking read), a file over ``limit`` bytes, an empty, cut-short or
    foreign file, or one holding Python objects beyond tensors and plain data (refused, never run).
    torch's warnings about the file (an unusual pickle protocol) are not shown: the error line says it."""
    try:
        data = read_regular(path, limit)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise RecordError(f"{path}: not {what} ({unreadable_reason(exc, limit)})") from None
    if not data:
        raise RecordError(f"{path}: not {what} (the file is empty)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many kinds here (UnpicklingError, RuntimeError, EOFError, ...)
        raise RecordError(f"{path}: not {what} ({unloadable_reason(exc)})") from None


def unreadable_reason(exc: OSError, limit: int) -> str:
    if isinstance(exc, NotARegularFile):
        return "not a regular file: a FIFO, device or folder"
    if exc.errno == errno.EFBIG:
        return f"over {limit:,} bytes, more than cnnbench ever writes"
    return f"cannot be read: {exc.strerror or exc}"


def unloadable_reason(exc: Exception) -> str:
    """Why ``torch.load(weights_only=True)`` refused a file, in a few words of our own (torch's message is
    long, and advises loading the file with code execution enabled)."""
    if isinstance(exc, pickle.UnpicklingError) and "Unsupported global" in str(exc):
        return "it holds Python objects other than tensors and plain data, which cnnbench never loads"
    return "not a file torch.save wrote (in its default format), or cut short"


def load_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint's contents, every field checked; anything unusable is one ``RecordError`` line naming the file."""
    try:
        state = load_torch_file(path, MAX_CHECKPOINT_BYTES, "a usable checkpoint")
    except FileNotFoundError:
        raise RecordError(f"no checkpoint at {path}") from None
    problem = checkpoint_problem(state, path.name.removesuffix(SUFFIX))
    if problem:
        raise RecordError(f"{path}: not a usable checkpoint ({problem})")
    return state


# field -> the types it may hold (None: the field may be missing in a checkpoint of an older cnnbench)
NUMBER = (int, float)
FIELDS: dict[str, tuple[tuple[type, ...], bool]] = {
    "run": ((dict,), True), "seed": ((int,), True), "model_name": ((str,), True), "overrides": ((dict,), True),
    "plugin_modules": ((list,), True), "epochs": ((list,), True), "elapsed": (NUMBER, True), "git": ((dict,), True),
    "resumed_at": ((list,), True), "model": ((dict,), True), "optimizer": ((dict,), True),
    "scheduler": ((dict, type(None)), True), "random": ((dict,), True), "loaders": ((dict,), True),
    "ema": ((dict, type(None)), False), "confusion": ((torch.Tensor, type(None)), False), "status": ((str,), False),
    "stopped_by": ((str, type(None)), False), "wall": ((*NUMBER, type(None)), False),
    "fused": ((dict, type(None)), False),
}
RUN_FIELDS = tuple(f.name for f in fields(RunInfo))
RANDOM_KEYS = ("python", "numpy", "torch", "cuda")


def checkpoint_problem(state: Any, file_id: str) -> str | None:
    """What makes ``state`` (loaded from ``<file_id>.ckpt``) unusable, or None."""
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        return f"not a cnnbench checkpoint of format {FORMAT}"
    for name, (types, required) in FIELDS.items():
        if name not in state:
            if required:
                return f"it has no {name!r}"
        elif not isinstance(state[name], types) or isinstance(state[name], bool):
            return f"{name!r} is {type(state[name]).__name__}"
    return run_problem(state, file_id) or contents_problem(state) or fused_problem(state)


def run_problem(state: dict[str, Any], file_id: str) -> str | None:
    run = state["run"]
    missing, unknown = [n for n in RUN_FIELDS if n not in run], [n for n in run if n not in RUN_FIELDS]
    if missing or unknown:
        return f"its run info has no {', '.join(missing)}" if missing else f"its run info has unknown {unknown[0]!r}"
    if run["run_id"] != file_id:
        return (f"it holds run {run['run_id']!r}, not {file_id!r}: a checkpoint resumes under its own run id only "
                f"(name it {run['run_id']}{SUFFIX})")
    if run["seed"] != state["seed"] or not isinstance(run["recipe"], dict):
        return "its run info does not match its seed, or has no recipe"
    return None


def contents_problem(state: dict[str, Any]) -> str | None:
    try:
        for epoch in state["epochs"]:
            EpochStats.from_json(epoch)
    except ValueError as exc:
        return f"epochs: {exc}"
    if not all(type(e) is int for e in state["resumed_at"]):
        return "'resumed_at' is not a list of epoch numbers"
    if not all(isinstance(m, str) for m in state["plugin_modules"]):
        return "'plugin_modules' is not a list of module names"
    if not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state["model"].items()):
        return "'model' is not a state dict of tensors"
    if not {"state", "param_groups"} <= set(state["optimizer"]):
        return "'optimizer' is not an optimizer state"
    if not set(RANDOM_KEYS) <= set(state["random"]):
        return f"'random' lacks {', '.join(sorted(set(RANDOM_KEYS) - set(state['random'])))}"
    if state.get("status", "running") not in STATUSES:
        return f"status {state['status']!r} is none of {', '.join(STATUSES)}"
    confusion = state.get("confusion")
    if confusion is not None and (confusion.ndim != 2 or confusion.shape[0] != confusion.shape[1]):
        return f"its confusion matrix has shape {tuple(confusion.shape)}"
    if state.get("status", "running") != "running" and (not state["epochs"] or confusion is None):
        return f"it says the run {state['status']}, but holds no epoch or no confusion matrix"
    return None


def fused_problem(state: dict[str, Any]) -> str | None:
    """A fused run's seeds name each other: ``{"index": k, "run_ids": [...], "seeds": [...]}``."""
    fused = state.get("fused")
    if fused is None:
        return None
    run_ids, seeds, index = fused.get("run_ids"), fused.get("seeds"), fused.get("index")
    if not (isinstance(run_ids, list) and isinstance(seeds, list) and len(run_ids) == len(seeds) >= 2
            and type(index) is int and 0 <= index < len(run_ids) and all(type(s) is int for s in seeds)):
        return "'fused' does not describe a fused run"
    if run_ids[index] != state["run"]["run_id"] or seeds[index] != state["seed"]:
        return "'fused' names another run in this seed's place"
    return None


@contextlib.contextmanager
def fitting(state: dict[str, Any]) -> Iterator[None]:
    """Loading a checkpoint's states into objects built from the plan as it is now: a mismatch is one line."""
    try:
        yield
    except (RuntimeError, ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
        message = " ".join(str(exc).split())[:200]
        raise RecordError(
            f"checkpoint of run {state['run']['run_id']} does not fit {state['model_name']!r} as it is now "
            f"({type(exc).__name__}: {message})"
        ) from None


def weights_mismatch(saved: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor]) -> str | None:
    """How the tensors ``saved`` fail to fit a model whose ``state_dict()`` is ``expected``, or None."""
    missing, unknown = [k for k in expected if k not in saved], [k for k in saved if k not in expected]
    if missing or unknown:
        first = f"no {missing[0]!r}" if missing else f"an unknown {unknown[0]!r}"
        return f"{len(saved)} tensors against the model's {len(expected)}, {first} among them"
    for name, tensor in saved.items():
        if tensor.shape != expected[name].shape:
            return f"{name!r} has shape {tuple(tensor.shape)}, the model's {tuple(expected[name].shape)}"
    return None


def restore_seed(state: dict[str, Any], model: torch.nn.Module, loaders: dict[str, Any],
                 ema: WeightEMA | None = None) -> None:
    """One seed's own states: its weights (and average), and its loaders' generators."""
    problem = weights_mismatch(state["model"], model.state_dict())
    if problem:
        raise RecordError(f"checkpoint of run {state['run']['run_id']} does not fit {state['model_name']!r} as it is "
                          f"now: {problem}")
    with fitting(state):
        model.load_state_dict(state["model"])
        if ema is not None:
            ema.load_state_dict(state["ema"])
        for name, loader in loaders.items():
            saved = state["loaders"].get(name)
            if saved is not None and hasattr(loader, "load_state_dict"):
                loader.load_state_dict(saved)


def restore_schedule(state: dict[str, Any], scheduler: torch.optim.lr_scheduler.LRScheduler | None,
                     device: str) -> None:
    """What the run's seeds share: the learning-rate schedule and the process's random generators
    (set last: building the model and loaders draws from them)."""
    with fitting(state):
        if scheduler is not None and state["scheduler"] is not None:
            scheduler.load_state_dict(state["scheduler"])
        set_random_states(state["random"], device)


def restore(state: dict[str, Any], model: torch.nn.Module, optimizer: torch.optim.Optimizer,
            scheduler: torch.optim.lr_scheduler.LRScheduler | None, loaders: dict[str, Any], device: str,
            ema: WeightEMA | None = None) -> None:
    """Put a run back where ``state`` left it (call after the model, optimizer and loaders are built)."""
    restore_seed(state, model, loaders, ema)
    with fitting(state):
        optimizer.load_state_dict(state["optimizer"])
    restore_schedule(state, scheduler, device)


# --- locks and listing ---------------------------------------------------------------------------


def lock_path(results_dir: Path, run_id: str) -> Path:
    return Path(results_dir) / f"{run_id}.lock"


@contextlib.contextmanager
def run_lock(results_dir: Path, run_id: str) -> Iterator[None]:
    """Held while a run trains, so ``bench runs``, ``bench resume`` and sweeps can tell a running run
    from an interrupted one; the kernel releases it when the process dies, however it dies. The file
    goes on every way out of the block (a failure included); only a kill leaves it, unlocked."""
    path = lock_path(results_dir, run_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = _lock(path, run_id)
    try:
        yield
    finally:
        with contextlib.suppress(OSError):  # removed while still locked: nobody else can hold this file
            path.unlink()
        os.close(fd)


def _lock(path: Path, run_id: str) -> int:
    """An open descriptor of ``path``, exclusively locked. Retried when the holder removed the file
    between our open and our lock (we would hold a lock on a file no longer there)."""
    while True:
        fd = os.open(path, os.O_CREAT | os.O_RDWR | os.O_NONBLOCK, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if _same_file(fd, path):
                return fd
        except BlockingIOError:
            os.close(fd)
            raise UsageError(f"run {run_id} is running in another process") from None
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.path.samestat(os.fstat(fd), os.stat(path))
    except FileNotFoundError:
        return False


def is_running(results_dir: Path, run_id: str) -> bool:
    """A live process holds the run's lock (opened non-blocking: a FIFO in its place cannot hang us)."""
    path = lock_path(results_dir, run_id)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def incomplete_runs(results_dir: Path) -> list[tuple[Path, dict[str, Any]]]:
    """Checkpoints in ``results_dir`` whose run has no record yet, oldest first. Each state has
    ``running`` (a live process holds the run's lock); an unusable one is ``{"error": why, "running": ...}``."""
    root = Path(results_dir)
    found = []
    for path in sorted(root.glob(f"*{SUFFIX}")) if root.is_dir() else []:
        run_id = path.name[: -len(SUFFIX)]
        if (root / f"{run_id}.json").exists():
            continue
        try:
            state = load_checkpoint(path)
        except RecordError as exc:
            state = {"error": str(exc)}
        found.append((path, {**state, "running": is_running(root, run_id)}))
    return found
