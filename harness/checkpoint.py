"""Checkpoints: what a run needs to continue after a kill, written after every epoch.

``<results_dir>/<run_id>.ckpt`` (the leaderboard reads only ``*.json``) holds the model,
optimizer and scheduler states, the epochs so far, and every random state the run draws
from: Python's, NumPy's, torch's CPU and CUDA generators and the loaders' own (order and
augmentation). It is written atomically (temp file, fsync, rename) and read with
``torch.load(weights_only=True)``, so a tampered file cannot run code. A completed run
removes its checkpoint.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import os
import random
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import BenchError
from .files import write_atomic

FORMAT = 1
SUFFIX = ".ckpt"


def checkpoint_path(results_dir: Path, run_id: str) -> Path:
    return Path(results_dir) / f"{run_id}{SUFFIX}"


def random_states(device: str) -> dict[str, Any]:
    """Python's, NumPy's and torch's generators, and the CUDA generator of the run's own device only
    (touching every GPU would create a context on each, and a resume may see fewer)."""
    version, mt, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
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


def snapshot(plan: Any, run: Any, seed: int, model: Any, optimizer: Any, scheduler: Any, loaders: dict[str, Any],
             epochs: list[Any], elapsed: float, git: dict[str, Any], ema: Any = None) -> dict[str, Any]:
    """Everything to continue the run after ``len(epochs)`` epochs."""
    return {
        "format": FORMAT,
        "run": asdict(run),
        "seed": seed,
        "model_name": plan.model.name,
        "overrides": plan.overrides.to_json(),
        "plugin_modules": list(plan.plugin_modules),
        "epochs": [e.to_json() for e in epochs],
        "elapsed": elapsed,
        "git": git,
        "resumed_at": list(plan.resumed_at),
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "random": random_states(plan.device),
        "loaders": {name: loader_state(loader) for name, loader in loaders.items()},
        "ema": ema_state(ema),
    }


def ema_state(ema: Any) -> dict[str, Any] | None:
    if ema is None:
        return None
    state = ema.state_dict()
    return {"module": {k: v.detach().cpu() for k, v in state["module"].items()}, "steps": state["steps"]}


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    write_atomic(path, buffer.getvalue())


def load_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint's contents; anything unreadable is a one-line ``BenchError`` naming the file."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise BenchError(f"no checkpoint at {path}") from None
    except Exception as exc:  # truncated, not a torch file, refused by weights_only ...
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BenchError(f"{path}: not a usable checkpoint ({message})") from exc
    if not isinstance(state, dict) or state.get("format") != FORMAT or "run" not in state:
        raise BenchError(f"{path}: not a cnnbench checkpoint of format {FORMAT}")
    return state


def restore(state: dict[str, Any], model: Any, optimizer: Any, scheduler: Any, loaders: dict[str, Any],
            device: str, ema: Any = None) -> None:
    """Put a run back where ``state`` left it (call after the model, optimizer and loaders are built)."""
    try:
        model.load_state_dict(state["model"])
        if ema is not None:
            ema.load_state_dict(state["ema"])
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None and state["scheduler"] is not None:
            scheduler.load_state_dict(state["scheduler"])
        for name, loader in loaders.items():
            saved = state["loaders"].get(name)
            if saved is not None and hasattr(loader, "load_state_dict"):
                loader.load_state_dict(saved)
        set_random_states(state["random"], device)
    except (RuntimeError, ValueError, KeyError, IndexError, TypeError) as exc:
        message = " ".join(str(exc).split())[:200]
        raise BenchError(
            f"checkpoint of run {state['run']['run_id']} does not fit {state['model_name']!r} as it is now "
            f"({type(exc).__name__}: {message})"
        ) from None


def lock_path(results_dir: Path, run_id: str) -> Path:
    return Path(results_dir) / f"{run_id}.lock"


@contextlib.contextmanager
def run_lock(results_dir: Path, run_id: str) -> Iterator[None]:
    """Held while a run trains, so ``bench runs``, ``bench resume`` and sweeps can tell a running run
    from an interrupted one; the kernel releases it when the process dies, however it dies."""
    path = lock_path(results_dir, run_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise BenchError(f"run {run_id} is running in another process") from None
        yield
        path.unlink(missing_ok=True)
    finally:
        os.close(fd)


def is_running(results_dir: Path, run_id: str) -> bool:
    path = lock_path(results_dir, run_id)
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def incomplete_runs(results_dir: Path) -> list[tuple[Path, dict[str, Any]]]:
    """Checkpoints in ``results_dir`` whose run has no record yet, oldest first (``running``: a live
    process holds the run's lock)."""
    root = Path(results_dir)
    found = []
    for path in sorted(root.glob(f"*{SUFFIX}")) if root.is_dir() else []:
        run_id = path.name[: -len(SUFFIX)]
        if (root / f"{run_id}.json").exists():
            continue
        try:
            state = load_checkpoint(path)
        except BenchError:
            state = {}
        found.append((path, {**state, "running": is_running(root, run_id)}))
    return found
