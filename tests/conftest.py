"""Shared fixtures. Real-data tests read ``../shared/datasets`` (or ``$BENCH_DATA_DIR``)."""

from __future__ import annotations

from pathlib import Path

import pytest
from support import SHARED_DATA


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
