"""Paths and helpers the tests share (a plain module: ``conftest`` names clash across folders)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("BENCH_DATA_DIR") or ROOT.parent / "shared" / "datasets")
PLUGIN_FIXTURES = ROOT / "tests" / "plugin_fixtures"
if str(PLUGIN_FIXTURES) not in sys.path:
    sys.path.insert(0, str(PLUGIN_FIXTURES))


BENCH = Path(sys.executable).parent / "bench"


def make_registry(*modules: str, blocked: tuple[str, ...] = ()):
    """A fresh registry with the installed plugins plus ``modules`` (not the cached one)."""
    from cnnbench.registry import Registry, make_plugin_manager

    return Registry(make_plugin_manager(modules, blocked))
