"""Shared fixtures. Real-data tests read ``../shared/datasets`` (or ``$BENCH_DATA_DIR``)."""

from __future__ import annotations

from pathlib import Path

import pytest
from support import SHARED_DATA

DATA_LISTING = pytest.StashKey[dict]()


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The real MNIST / CIFAR-10 files; missing data is a failure, not a skip."""
    if not (SHARED_DATA / "MNIST" / "raw").is_dir():
        pytest.fail(f"real datasets not found at {SHARED_DATA}; set BENCH_DATA_DIR")
    return SHARED_DATA


@pytest.fixture(scope="session")
def registry():
    from cnnbench.registry import get_registry

    return get_registry()


@pytest.fixture(autouse=True)
def _clean_plugin_env(monkeypatch):
    monkeypatch.delenv("BENCH_PLUGINS", raising=False)
    monkeypatch.delenv("BENCH_DISABLE_PLUGIN_AUTOLOAD", raising=False)


@pytest.fixture(autouse=True)
def _keep_process_state():
    """An in-process run with ``--threads 1`` (or a test that touches SIGINT) must not change what the
    next test runs with: CPU results depend on the thread count, and children inherit an ignored SIGINT."""
    import signal

    import torch

    sigint = signal.getsignal(signal.SIGINT)
    yield
    torch.set_num_threads(DEFAULT_THREADS)
    if signal.getsignal(signal.SIGINT) is not sigint and sigint is not None:
        signal.signal(signal.SIGINT, sigint)


def _listing(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``root`` with its size and modification time (nanoseconds)."""
    if not root.is_dir():
        return {}
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}


def _default_threads() -> int:
    import torch

    return torch.get_num_threads()


DEFAULT_THREADS = _default_threads()  # before any test or module-level fixture changed it


def pytest_sessionstart(session):
    session.config.stash[DATA_LISTING] = _listing(SHARED_DATA)


def pytest_sessionfinish(session, exitstatus):
    """The suite never writes into the data directory, even when it is writable."""
    before = session.config.stash.get(DATA_LISTING, None)
    if before is None:
        return
    after = _listing(SHARED_DATA)
    if after != before:
        changed = sorted(set(after) ^ set(before) | {k for k in before if k in after and before[k] != after[k]})
        print(f"\nERROR: the test suite changed {SHARED_DATA}: {', '.join(changed[:10])}")
        session.exitstatus = 1
