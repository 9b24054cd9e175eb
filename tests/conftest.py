"""Shared fixtures. Real-data tests read ``../shared/datasets`` (or ``$BENCH_DATA_DIR``)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from support import SHARED_DATA

DATA_LISTING = pytest.StashKey[dict]()


def missing_data(root: Path) -> str | None:
    """Why the real datasets are not usable at ``root`` (None: they are there)."""
    wanted = [root / "MNIST" / "raw", root / "cifar-10-batches-py"]
    missing = [str(p) for p in wanted if not p.is_dir()]
    return f"real datasets not found: looked for {', '.join(missing)} (set BENCH_DATA_DIR)" if missing else None


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The real MNIST / CIFAR-10 files. Missing data skips the test with the path it looked at,
    except under ``CI=true``, where it fails: CI must never pass by skipping the real-data tests."""
    why = missing_data(SHARED_DATA)
    if why:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(why)
        pytest.skip(why)
    return SHARED_DATA


@pytest.fixture(scope="session")
def registry():
    from cnnbench.registry import get_registry

    return get_registry()


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory):
    """``bench speed`` caches the machine's peak: in a folder of this test session, not the user's ~/.cache.
    The cache starts with a quick small-matrix peak for the thread counts the tests use (the commands'
    tests check the arithmetic on it; tests/test_speed_limit.py measures for real)."""
    import torch

    from cnnbench.training.speed.peak import machine_peak

    before = os.environ.get("BENCH_CACHE_DIR")
    folder = tmp_path_factory.mktemp("cache")
    os.environ["BENCH_CACHE_DIR"] = str(folder)
    for threads in sorted({1, DEFAULT_THREADS}):
        torch.set_num_threads(threads)
        machine_peak(torch.device("cpu"), threads, folder=folder, size=256)
    torch.set_num_threads(DEFAULT_THREADS)
    yield
    if before is None:
        os.environ.pop("BENCH_CACHE_DIR", None)
    else:
        os.environ["BENCH_CACHE_DIR"] = before


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
