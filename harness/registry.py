"""Plugin discovery and the name registry (timm-style ``list_models`` / ``create_model``).

Built-in plugins are found exactly as third-party ones are: through the ``cnnbench``
entry-point group of installed distributions. Modules that are not installed can be
added with ``--plugin module.path`` or ``BENCH_PLUGINS=mod1,mod2``.
``BENCH_DISABLE_PLUGIN_AUTOLOAD=1`` loads only cnnbench's own entry points plus the
modules named explicitly (as pytest's ``PYTEST_DISABLE_PLUGIN_AUTOLOAD`` does).
"""

from __future__ import annotations

import fnmatch
import importlib
import os
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import metadata
from typing import Any

import pluggy

from . import hookspecs
from .errors import BenchError, unknown_name
from .records import (
    AugmentationSpec,
    DatasetSpec,
    LoaderSpec,
    ModelSpec,
    NormalizerSpec,
    Target,
    resolve,
)

ENTRY_POINT_GROUP = "cnnbench"
OWN_DISTRIBUTION = "cnnbench"

# kind -> (hook name, record type, attribute holding the record's name)
KINDS: dict[str, tuple[str, type, str]] = {
    "datasets": ("cnnbench_datasets", DatasetSpec, "name"),
    "models": ("cnnbench_models", ModelSpec, "name"),
    "augmentations": ("cnnbench_augmentations", AugmentationSpec, "name"),
    "normalizers": ("cnnbench_normalizers", NormalizerSpec, "name"),
    "loaders": ("cnnbench_loaders", LoaderSpec, "name"),
    "targets": ("cnnbench_targets", Target, "id"),
}


@dataclass(frozen=True)
class Registered:
    """A record together with the plugin that registered it."""

    record: Any
    plugin: str


def _autoload_disabled() -> bool:
    return os.environ.get("BENCH_DISABLE_PLUGIN_AUTOLOAD", "").strip() not in ("", "0")


def _env_modules() -> list[str]:
    return [m.strip() for m in os.environ.get("BENCH_PLUGINS", "").split(",") if m.strip()]


def _register_module(pm: pluggy.PluginManager, module_name: str, label: str) -> None:
    if pm.get_plugin(label) is not None:
        return
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # a broken plugin must not look like a cnnbench crash
        raise BenchError(f"plugin {label!r} ({module_name}) failed to import: {type(exc).__name__}: {exc}") from exc
    pm.register(module, name=label)


def _entry_points() -> list[metadata.EntryPoint]:
    found = metadata.entry_points(group=ENTRY_POINT_GROUP)
    if _autoload_disabled():
        found = [ep for ep in found if ep.dist is not None and ep.dist.name == OWN_DISTRIBUTION]
    # one entry per name: an editable install can list the same distribution twice
    unique: dict[tuple[str, str], metadata.EntryPoint] = {}
    for ep in found:
        unique.setdefault((ep.name, ep.value), ep)
    return list(unique.values())


def make_plugin_manager(extra_modules: Iterable[str] = ()) -> pluggy.PluginManager:
    """Discover and register every plugin: entry points, ``BENCH_PLUGINS`` and ``extra_modules``."""
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    for ep in _entry_points():
        dist = ep.dist.name if ep.dist is not None else "?"
        label = ep.name if dist == OWN_DISTRIBUTION else f"{dist}:{ep.name}"
        try:
            module = ep.load()
        except Exception as exc:
            raise BenchError(f"plugin {label!r} ({ep.value}) failed to import: {type(exc).__name__}: {exc}") from exc
        if pm.get_plugin(label) is None:
            pm.register(module, name=label)
    for module_name in [*_env_modules(), *extra_modules]:
        _register_module(pm, module_name, module_name)
    return pm


class Registry:
    """Everything the plugins registered, indexed by name; built once per process."""

    def __init__(self, pm: pluggy.PluginManager) -> None:
        self.pm = pm
        self._cache: dict[str, dict[str, Registered]] = {}

    def plugins(self) -> list[tuple[str, str]]:
        """``(plugin name, module)`` for every registered plugin."""
        return sorted((name, getattr(p, "__name__", repr(p))) for name, p in self.pm.list_name_plugin())

    def entries(self, kind: str) -> dict[str, Registered]:
        """All records of one kind (``models``, ``datasets`` …) by name, checked for clashes."""
        if kind not in self._cache:
            self._cache[kind] = self._collect(kind)
        return self._cache[kind]

    def _collect(self, kind: str) -> dict[str, Registered]:
        hook_name, record_type, key = KINDS[kind]
        found: dict[str, Registered] = {}
        for impl in getattr(self.pm.hook, hook_name).get_hookimpls():
            plugin = impl.plugin_name
            try:
                records = impl.function() or []
            except Exception as exc:
                raise BenchError(
                    f"plugin {plugin!r} raised while registering {kind}: {type(exc).__name__}: {exc}"
                ) from exc
            for record in records:
                if not isinstance(record, record_type):
                    raise BenchError(
                        f"plugin {plugin!r} returned {type(record).__name__} from {hook_name}; "
                        f"expected {record_type.__name__}"
                    )
                name = getattr(record, key)
                if name in found:
                    raise BenchError(
                        f"{kind[:-1]} {name!r} is registered twice: by plugin "
                        f"{found[name].plugin!r} and by plugin {plugin!r}"
                    )
                found[name] = Registered(record, plugin)
        return dict(sorted(found.items()))

    def get(self, kind: str, name: str) -> Any:
        """The record called ``name``, or a ``BenchError`` listing the valid names."""
        entries = self.entries(kind)
        if name not in entries:
            raise unknown_name(kind[:-1], name, list(entries))
        return entries[name].record

    # timm-style conveniences -----------------------------------------------------

    def list_models(self, pattern: str = "*", dataset: str | None = None) -> list[str]:
        """Model names matching a shell pattern, e.g. ``list_models('mnist*')``."""
        return [
            name
            for name, entry in self.entries("models").items()
            if fnmatch.fnmatch(name, pattern) and (dataset is None or entry.record.dataset == dataset)
        ]

    def model(self, name: str) -> ModelSpec:
        return self.get("models", name)

    def dataset(self, name: str) -> DatasetSpec:
        return self.get("datasets", name)

    def augmentation(self, name: str) -> AugmentationSpec:
        return self.get("augmentations", name)

    def normalizer(self, name: str) -> NormalizerSpec:
        return self.get("normalizers", name)

    def loader(self, name: str) -> LoaderSpec:
        return self.get("loaders", name)

    def targets(self, dataset: str | None = None) -> list[Target]:
        return [e.record for e in self.entries("targets").values() if dataset in (None, e.record.dataset)]

    def create_model(self, name: str, normalizer: str | None = None, dropout: float | None = None) -> Any:
        """Build model ``name`` with its norms made by ``normalizer`` (default: the document's)."""
        spec = self.model(name)
        norm_spec = self.normalizer(normalizer or spec.normalizer)
        kwargs: dict[str, Any] = {"norm": resolve(norm_spec.factory)}
        if dropout is not None:
            kwargs["dropout"] = dropout
        elif spec.recipe.dropout is not None:
            kwargs["dropout"] = spec.recipe.dropout
        return resolve(spec.factory)(**kwargs)


_default: Registry | None = None
_default_key: tuple[str, ...] = ()


def get_registry(extra_modules: Iterable[str] = ()) -> Registry:
    """The process-wide registry (rebuilt when the set of extra modules changes)."""
    global _default, _default_key
    key = (*_env_modules(), *extra_modules, str(_autoload_disabled()))
    if _default is None or key != _default_key:
        _default = Registry(make_plugin_manager(extra_modules))
        _default_key = key
    return _default


def list_models(pattern: str = "*", dataset: str | None = None) -> list[str]:
    return get_registry().list_models(pattern, dataset)


def create_model(name: str, normalizer: str | None = None, dropout: float | None = None) -> Any:
    return get_registry().create_model(name, normalizer, dropout)
