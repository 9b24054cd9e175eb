"""Every piece of compatibility code in cnnbench, in one place (pytest's ``deprecated.py`` is the model).

The rule (docs/plugins.md): a public name that is renamed or removed keeps working for at least one
minor version of the package, with a ``CnnbenchDeprecationWarning`` (a ``DeprecationWarning``) that
names its replacement; the entry below says when it goes. ``bench`` prints these warnings as one
``warning:`` line each; under pytest they show in the warnings summary.

What is kept, and until when:

- the plugin API 0.1 import path ``harness`` (and ``harness.<module>``): an alias of ``cnnbench``,
  removed in cnnbench 0.3;
- modules that moved into sub-packages in 0.2 (``cnnbench.train`` -> ``cnnbench.training.train``,
  ``cnnbench.leaderboard`` -> ``cnnbench.reports.leaderboard`` ...): aliases, removed in 0.3;
- the ``bench sweep`` options that became a launcher's own in 0.2 (``--address`` ->
  ``--ray-address``, ``--jobs-per-gpu`` -> ``--local-jobs-per-gpu`` ...): renamed with a warning,
  removed in 0.3;
- dict access on the typed objects lifecycle hooks receive (``run["model"]`` on a ``RunInfo``,
  ``epoch["test_acc"]`` on an ``EpochStats``, ``record["final_test_acc"]`` on a ``RunRecord``), as
  API 0.1 hooks received dicts: removed in 0.3.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import warnings
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

REMOVED_IN = "0.3"


class CnnbenchDeprecationWarning(DeprecationWarning):
    """A name or behaviour that still works but goes in a later version; the message names the replacement."""


def warn(message: str, stacklevel: int = 3) -> None:
    warnings.warn(f"{message} (deprecated; removed in cnnbench {REMOVED_IN})", CnnbenchDeprecationWarning,
                  stacklevel=stacklevel)


# --- old module paths -------------------------------------------------------------------------

OLD_PACKAGE = "harness"  # plugin API 0.1 imported the core as ``harness``
MOVED_MODULES: dict[str, str] = {  # cnnbench 0.1 module -> its home since 0.2
    "cnnbench.cli_reports": "cnnbench.cli.reports",
    "cnnbench.cli_speed": "cnnbench.cli.speed",
    "cnnbench.cli_sweep": "cnnbench.cli.sweep",
    **{f"cnnbench.{name}": f"cnnbench.training.{name}" for name in (
        "plan", "train", "fused", "checkpoint", "resume", "runner", "ema", "provenance", "speed", "summary")},
    "cnnbench.jobs": "cnnbench.sweep.jobs",
    "cnnbench.leaderboard": "cnnbench.reports.leaderboard",
    "cnnbench.html": "cnnbench.reports.html",
    "cnnbench.report_site": "cnnbench.reports.site",
    "cnnbench.report_plots": "cnnbench.reports.plots",
    "cnnbench.browser": "cnnbench.reports.browser",
}
# 0.1 modules whose names are now sub-packages: their functions are reached through the package
MOVED_INTO_PACKAGE: dict[str, str] = {
    "cnnbench.sweep": "cnnbench.sweep.grid",
    "cnnbench.reports": "cnnbench.reports.runs",
}


def new_name(old: str) -> str | None:
    """Where the module ``old`` lives now (None: it did not move)."""
    if old == OLD_PACKAGE or old.startswith(OLD_PACKAGE + "."):
        moved = "cnnbench" + old[len(OLD_PACKAGE):]
        return MOVED_MODULES.get(moved, moved)
    return MOVED_MODULES.get(old)


class _AliasLoader(importlib.abc.Loader):
    """Loads an old module name as the module that replaced it (the same object, not a copy)."""

    def __init__(self, target: str) -> None:
        self.target = target

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return None

    def exec_module(self, module: ModuleType) -> None:
        warn(f"import {module.__name__} is the old name of {self.target}; import {self.target}", stacklevel=8)
        # the import system returns what sys.modules holds under the name after exec_module
        sys.modules[module.__name__] = importlib.import_module(self.target)


class _OldPathFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
                  ) -> importlib.machinery.ModuleSpec | None:
        replacement = new_name(fullname)
        if replacement is None or replacement == fullname:
            return None
        return importlib.machinery.ModuleSpec(fullname, _AliasLoader(replacement))


def install_old_import_paths() -> None:
    """Make ``import harness`` and the 0.1 module paths work (with a warning); idempotent."""
    if not any(isinstance(finder, _OldPathFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _OldPathFinder())


def package_getattr(package: str) -> Callable[[str], Any]:
    """A module ``__getattr__`` for a package that took the name of a 0.1 module: the module's
    functions stay reachable as ``package.name``, with a warning."""
    def __getattr__(name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        target = MOVED_INTO_PACKAGE[package]
        module = importlib.import_module(target)
        if not hasattr(module, name):
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        warn(f"{package}.{name} moved to {target}.{name}")
        return getattr(module, name)

    return __getattr__


# --- bench sweep options that moved into their launcher ----------------------------------------

OLD_SWEEP_OPTIONS: dict[str, str] = {
    "--jobs-per-gpu": "--local-jobs-per-gpu",
    "--address": "--ray-address",
    "--gpus-per-job": "--ray-gpus-per-job",
    "--cpus-per-job": "--ray-cpus-per-job",
    "--max-retries": "--ray-max-retries",
}


def rename_old_sweep_options(args: list[str]) -> list[str]:
    """``args`` with each 0.1 sweep option (``--address X`` or ``--address=X``) under its new name, with a warning."""
    renamed = []
    for arg in args:
        name, eq, value = arg.partition("=")
        if name in OLD_SWEEP_OPTIONS:
            new = OLD_SWEEP_OPTIONS[name]
            warn(f"bench sweep {name} is now {new} (an option of its launcher); use {new}", stacklevel=2)
            arg = f"{new}{eq}{value}"
        renamed.append(arg)
    return renamed


# --- dict access on the typed run data (API 0.1 hooks received dicts) -------------------------


def _getitem(self: Any, key: str) -> Any:
    warn(f"{type(self).__name__}[{key!r}]: lifecycle hooks receive typed objects since plugin API 1.0; "
         f"use .{key}")
    try:
        return getattr(self, key)
    except AttributeError:
        raise KeyError(key) from None


def _get(self: Any, key: str, default: Any = None) -> Any:
    try:
        return _getitem(self, key)
    except KeyError:
        return default


def add_dict_access(*classes: type) -> None:
    """``obj["field"]`` and ``obj.get("field")`` on the typed run data, with a warning."""
    for cls in classes:
        setattr(cls, "__getitem__", _getitem)  # noqa: B010 (assigned on purpose: compatibility shim)
        setattr(cls, "get", _get)  # noqa: B010


# --- plugins that declare an older API ---------------------------------------------------------


def warn_old_api(label: str, wanted: str) -> None:
    warn(f"plugin {label!r} declares CNNBENCH_API = {wanted!r}; update it for plugin API 1.0 "
         "(docs/plugins.md: upgrading a plugin written for 0.1)", stacklevel=2)


# --- how bench shows them ------------------------------------------------------------------------


def show_as_warning_lines(echo: Callable[[str], None]) -> None:
    """Show each ``CnnbenchDeprecationWarning`` once, as one ``warning: ...`` line through ``echo``."""
    previous = warnings.showwarning

    def show(message: Warning | str, category: type[Warning], filename: str, lineno: int,
             file: Any = None, line: str | None = None) -> None:
        if issubclass(category, CnnbenchDeprecationWarning):
            echo(f"warning: {message}")
        else:
            previous(message, category, filename, lineno, file, line)

    warnings.showwarning = show
    warnings.filterwarnings("default", category=CnnbenchDeprecationWarning)
