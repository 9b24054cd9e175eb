"""Plugin discovery and the name registry (timm-style ``list_models`` / ``create_model``).

Built-in plugins are the modules of ``cnnbench.plugins`` named in ``DEFAULT_PLUGINS``; they
implement the same hooks a third-party plugin does and are registered first. Third-party
plugins come from the ``cnnbench`` entry-point group of installed distributions, from
``BENCH_PLUGINS=mod1,mod2`` and from ``bench --plugin MODULE`` (the current directory is
importable for those). ``BENCH_DISABLE_PLUGIN_AUTOLOAD=1`` skips the entry points, as
pytest's ``PYTEST_DISABLE_PLUGIN_AUTOLOAD`` does. ``bench --no-plugin NAME`` blocks one
plugin (``--no-plugin console`` silences the console output).
"""

from __future__ import annotations

import contextlib
import fnmatch
import importlib
import inspect
import os
import re
import sys
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib import metadata
from types import ModuleType
from typing import TYPE_CHECKING, Any

import pluggy

from cnnbench import deprecated, hookspecs, records
from cnnbench.errors import BenchError, PluginError, UsageError, unknown_name
from cnnbench.hookspecs import API_VERSION, parse_api_version
from cnnbench.records import LauncherSpec, Target, resolve

if TYPE_CHECKING:
    import click
    from torch import nn

ENTRY_POINT_GROUP = "cnnbench"
OWN_DISTRIBUTION = "cnnbench"
BUILTIN_PACKAGE = "cnnbench.plugins"
# The built-in plugins, in registration order (datasette's DEFAULT_PLUGINS).
DEFAULT_PLUGINS = (
    "mnist",
    "cifar10",
    "mnist_models",
    "cifar_models",
    "fast_models",
    "tiny_models",
    "normalizers",
    "augment_rotation",
    "augment_cifar",
    "loaders",
    "ffcv_loader",
    "ffcv_commands",
    "targets",
    "console",
    "launch_local",
    "launch_ray",
)

# Built-ins the product cannot work without, and why (``--no-plugin`` refuses them in one line).
ESSENTIAL_PLUGINS: dict[str, str] = {
    "loaders": "it provides the default loader 'memory' every run uses",
    "normalizers": "it provides the normalization layers every built-in model is built with",
    "launch_local": "it provides the default launcher of bench sweep",
}

# kind -> (hook name, record type, attribute holding the record's name)
KINDS: dict[str, tuple[str, type, str]] = {
    "datasets": ("cnnbench_datasets", records.DatasetSpec, "name"),
    "models": ("cnnbench_models", records.ModelSpec, "name"),
    "augmentations": ("cnnbench_augmentations", records.AugmentationSpec, "name"),
    "normalizers": ("cnnbench_normalizers", records.NormalizerSpec, "name"),
    "loaders": ("cnnbench_loaders", records.LoaderSpec, "name"),
    "targets": ("cnnbench_targets", Target, "id"),
    "launchers": ("cnnbench_launchers", LauncherSpec, "name"),
}


# kinds whose names become parts of file names (run ids, .beton files)
NAMED_FILES = ("models", "datasets", "targets")
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


@dataclass(frozen=True)
class PluginSource:
    """Where a plugin's code comes from: its registered name, module and distribution."""

    name: str
    module: str
    distribution: str | None
    version: str | None

    def as_json(self) -> dict[str, Any]:
        return {"plugin": self.name, "module": self.module, "distribution": self.distribution, "version": self.version}


@dataclass(frozen=True)
class Registered:
    """A record together with the plugin that registered it."""

    record: Any
    plugin: str


def _autoload_disabled() -> bool:
    return os.environ.get("BENCH_DISABLE_PLUGIN_AUTOLOAD", "").strip() not in ("", "0")


def _env_modules() -> list[str]:
    return [m.strip() for m in os.environ.get("BENCH_PLUGINS", "").split(",") if m.strip()]


def _own_version() -> str | None:
    try:
        return metadata.version(OWN_DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return None


def _distribution_of(module_name: str) -> tuple[str | None, str | None]:
    """The installed distribution that ships ``module_name`` (None for a loose module)."""
    top = module_name.split(".", 1)[0]
    names = metadata.packages_distributions().get(top) or []
    if not names:
        return None, None
    try:
        return names[0], metadata.version(names[0])
    except metadata.PackageNotFoundError:
        return names[0], None


def _import(module_name: str, label: str, load: Callable[[], ModuleType] | None = None) -> ModuleType:
    """Import a plugin module (or call ``load``, an entry point's); any failure (``sys.exit``
    included) is one ``BenchError`` naming the plugin."""
    try:
        return load() if load is not None else importlib.import_module(module_name)
    except BaseException as exc:  # third-party code: SystemExit and friends included
        if isinstance(exc, KeyboardInterrupt):
            raise
        raise PluginError(f"plugin {label!r} ({module_name}) failed to import: {type(exc).__name__}: {exc}") from exc


class PluginManager(pluggy.PluginManager):
    """pluggy's manager plus where each plugin came from (for run records)."""

    def __init__(self) -> None:
        super().__init__(hookspecs.PROJECT)
        self.add_hookspecs(hookspecs)
        self.sources: dict[str, PluginSource] = {}
        self.explicit: list[str] = []  # modules named with --plugin / BENCH_PLUGINS

    def add(self, module: ModuleType, label: str, distribution: str | None, version: str | None) -> None:
        """Register ``module`` as ``label`` once; a module already registered under another name is skipped."""
        if self.get_plugin(label) is not None or self.is_registered(module) or self.is_blocked(label):
            return
        check_api_version(module, label)
        try:
            self.register(module, name=label)
        except (ValueError, pluggy.PluginValidationError) as exc:
            raise PluginError(f"plugin {label!r} ({module.__name__}) is invalid: {' '.join(str(exc).split())}") from exc
        self.sources[label] = PluginSource(label, module.__name__, distribution, version)

    def source(self, label: str) -> PluginSource | None:
        return self.sources.get(label)


def _importable_cwd() -> None:
    """``bench --plugin my_nets`` from the folder holding ``my_nets.py`` works, as ``python -m`` does."""
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.append(cwd)


def make_plugin_manager(extra_modules: Iterable[str] = (), blocked: Iterable[str] = ()) -> PluginManager:
    """Register every plugin: the built-ins, entry points, ``BENCH_PLUGINS`` and ``extra_modules``."""
    pm = PluginManager()
    for label in blocked:
        if label in ESSENTIAL_PLUGINS:
            raise UsageError(f"--no-plugin {label}: a built-in that cannot be switched off: {ESSENTIAL_PLUGINS[label]}")
        pm.set_blocked(label)
    deprecated.install_old_import_paths()  # plugins written for API 0.1 import ``harness``
    version = _own_version()
    for name in DEFAULT_PLUGINS:
        pm.add(_import(f"{BUILTIN_PACKAGE}.{name}", name), name, OWN_DISTRIBUTION, version)
    if not _autoload_disabled():
        for ep in _entry_points():
            dist = ep.dist.name if ep.dist is not None else None
            label = f"{dist}:{ep.name}" if dist else ep.name
            if pm.is_blocked(label):
                continue
            module = _import(ep.value, label, ep.load)
            pm.add(module, label, dist, ep.dist.version if ep.dist is not None else None)
    explicit = [*_env_modules(), *extra_modules]
    if explicit:
        _importable_cwd()
    for module_name in explicit:
        if pm.is_blocked(module_name):
            continue
        pm.add(_import(module_name, module_name), module_name, *_distribution_of(module_name))
        pm.explicit.append(module_name)
    check_hook_names(pm)
    return pm


def check_hook_names(pm: PluginManager) -> None:
    """A misspelled hook (``@hookimpl def cnnbench_epoch_ends``) is an error, not silence."""
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise PluginError(f"plugin {pm.get_name(exc.plugin)!r}: {' '.join(str(exc).split())}") from None


def _entry_points() -> list[metadata.EntryPoint]:
    # one entry per name: an editable install can list the same distribution twice
    unique: dict[tuple[str, str], metadata.EntryPoint] = {}
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        unique.setdefault((ep.name, ep.value), ep)
    return list(unique.values())


class SafeHooks:
    """``hooks.cnnbench_x(**kwargs)`` as pluggy calls it, except that an exception raised by
    plugin code (``SystemExit`` included) becomes a ``BenchError`` naming the plugin and hook."""

    def __init__(self, pm: PluginManager) -> None:
        self._pm = pm

    def each(self, name: str, first: bool = False, **kwargs: Any) -> list[tuple[str, Any]]:
        """``(plugin, answer)`` for each plugin answering lifecycle hook ``name``, in pluggy's call order."""
        return answers_by_plugin(self._pm, name, f"failed in {name}", first=first, **kwargs)

    def __getattr__(self, name: str) -> Any:
        caller = getattr(self._pm.hook, name)

        def call(**kwargs: Any) -> Any:
            try:
                return caller(**kwargs)
            except (BenchError, KeyboardInterrupt):
                raise
            except (Exception, SystemExit) as exc:
                raise PluginError(
                    f"plugin {self.culprit(exc)!r} failed in {name}: {type(exc).__name__}: {first_line(exc)}"
                ) from exc

        return call

    def culprit(self, exc: BaseException) -> str:
        """The plugin whose module holds the innermost frame of the traceback; failing that, the
        innermost frame in a plugin's folder (a module the plugin uses, e.g. its networks)."""
        files: dict[str, str] = {}
        folders: dict[str, str] = {}
        for label, plugin in self._pm.list_name_plugin():
            with contextlib.suppress(TypeError, OSError):  # a plugin object without a source file
                path = os.path.realpath(inspect.getfile(plugin))  # type: ignore[arg-type]
                files[path] = label
                folders.setdefault(os.path.dirname(path), label)
        frames = [os.path.realpath(f.filename) for f in reversed(traceback.extract_tb(exc.__traceback__))]
        for path in frames:
            if path in files:
                return files[path]
        for path in frames:
            if os.path.dirname(path) in folders or os.path.dirname(os.path.dirname(path)) in folders:
                return f"code in {os.path.basename(os.path.dirname(path))}/{os.path.basename(path)}"
        return "unknown"


def answers_by_plugin(pm: PluginManager, hook_name: str, failed: str, *, first: bool = False,
                      call_order: bool = True, **kwargs: Any) -> list[tuple[str, Any]]:
    """``(plugin name, answer)`` for each plugin that answers ``hook_name`` (None is no answer).

    Each plugin is called through pluggy's hook caller (a subset caller holding that plugin's
    implementation and every hook wrapper), so wrappers and ``pm.trace`` see the calls, while an
    answer or an exception is still attributed to the plugin that produced it (pluggy's own call
    returns answers without saying whose). ``call_order``: the order pluggy calls them (the last
    registered first), else registration order; ``first``: a ``firstresult`` hook, asked up to its
    first answer. A failure of plugin code is a ``PluginError``: "plugin NAME {failed}: ...".
    """
    impls = [i for i in getattr(pm.hook, hook_name).get_hookimpls() if not (i.hookwrapper or i.wrapper)]
    answers: list[tuple[str, Any]] = []
    for impl in reversed(impls) if call_order else impls:
        caller = pm.subset_hook_caller(hook_name, remove_plugins=[i.plugin for i in impls if i is not impl])
        try:
            result = caller(**kwargs)
        except (BenchError, KeyboardInterrupt):
            raise
        except BaseException as exc:  # third-party code: SystemExit and friends included
            raise PluginError(
                f"plugin {impl.plugin_name!r} {failed}: {type(exc).__name__}: {first_line(exc)}"
            ) from exc
        returned = [result] if first else result  # a firstresult hook returns its answer, others a list
        answers += [(impl.plugin_name, answer) for answer in returned if answer is not None]
        if first and answers:
            break
    return answers


def call_each_plugin(pm: PluginManager, hook_name: str, doing: str) -> list[tuple[str, list[Any]]]:
    """``(plugin name, the list it returned)`` for every plugin answering a registration hook, in
    registration order (``answers_by_plugin``); an answer that is not a list names its plugin."""
    collected: list[tuple[str, list[Any]]] = []
    for plugin, result in answers_by_plugin(pm, hook_name, f"raised while {doing}", call_order=False):
        if isinstance(result, str | bytes) or not isinstance(result, Iterable):
            raise PluginError(f"plugin {plugin!r} returned {type(result).__name__} from {hook_name}; expected a list")
        collected.append((plugin, list(result)))
    return collected


def check_api_version(module: ModuleType, label: str) -> None:
    """Refuse, in one line, a plugin that declares ``CNNBENCH_API`` newer than this cnnbench's."""
    wanted = getattr(module, "CNNBENCH_API", None)
    if wanted is None:
        return
    try:
        needed = parse_api_version(str(wanted))
    except ValueError:
        raise PluginError(
            f"plugin {label!r} declares CNNBENCH_API = {wanted!r}; expected a version like {API_VERSION!r}"
        ) from None
    have = parse_api_version(API_VERSION)
    if needed > have:
        raise PluginError(
            f"plugin {label!r} needs cnnbench plugin API {wanted}, this cnnbench has {API_VERSION}: upgrade cnnbench"
        )
    if needed[0] < have[0]:
        deprecated.warn_old_api(label, str(wanted))


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else "(no message)"


class Registry:
    """Everything the plugins registered, indexed by name; built once per process."""

    def __init__(self, pm: PluginManager) -> None:
        self.pm = pm
        self._cache: dict[str, dict[str, Registered]] = {}

    @property
    def hook(self) -> SafeHooks:
        """Hook caller for the run lifecycle: a plugin's exception becomes one line naming it."""
        return SafeHooks(self.pm)

    def plugins(self) -> list[tuple[str, str]]:
        """``(plugin name, module)`` for every registered plugin."""
        registered = [(name, p) for name, p in self.pm.list_name_plugin() if p is not None]  # None: blocked
        return sorted((name, getattr(p, "__name__", repr(p))) for name, p in registered)

    def entries(self, kind: str) -> dict[str, Registered]:
        """All records of one kind (``models``, ``datasets`` …) by name, checked for clashes."""
        if kind not in self._cache:
            self._cache[kind] = self._collect(kind)
        return self._cache[kind]

    def _collect(self, kind: str) -> dict[str, Registered]:
        hook_name, record_type, key = KINDS[kind]
        found: dict[str, Registered] = {}
        for plugin, returned in call_each_plugin(self.pm, hook_name, f"registering {kind}"):
            for record in returned:
                if not isinstance(record, record_type):
                    raise PluginError(
                        f"plugin {plugin!r} returned {type(record).__name__} from {hook_name}; "
                        f"expected {record_type.__name__}"
                    )
                name = getattr(record, key)
                if kind in NAMED_FILES and not SAFE_NAME.fullmatch(str(name)):
                    raise PluginError(
                        f"plugin {plugin!r} registers {kind[:-1]} {name!r}: names must be letters, digits, "
                        "'_', '-' or '.' (not leading), as they become parts of file names"
                    )
                if name in found:
                    raise PluginError(
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

    def source_of(self, kind: str, name: str) -> PluginSource | None:
        """The plugin (and its distribution) that registered ``name``."""
        entry = self.entries(kind).get(name)
        return self.pm.source(entry.plugin) if entry else None

    # timm-style conveniences -----------------------------------------------------

    def list_models(self, pattern: str = "*", dataset: str | None = None) -> list[str]:
        """Model names matching a shell pattern, e.g. ``list_models('mnist*')``."""
        return [
            name
            for name, entry in self.entries("models").items()
            if fnmatch.fnmatch(name, pattern) and (dataset is None or entry.record.dataset == dataset)
        ]

    def model(self, name: str) -> records.ModelSpec:
        return self.get("models", name)

    def dataset(self, name: str) -> records.DatasetSpec:
        return self.get("datasets", name)

    def augmentation(self, name: str) -> records.AugmentationSpec:
        return self.get("augmentations", name)

    def normalizer(self, name: str) -> records.NormalizerSpec:
        return self.get("normalizers", name)

    def loader(self, name: str) -> records.LoaderSpec:
        return self.get("loaders", name)

    def targets(self, dataset: str | None = None) -> list[Target]:
        return [e.record for e in self.entries("targets").values() if dataset in (None, e.record.dataset)]

    def create_model(self, name: str, normalizer: str | None = None, dropout: float | None = None) -> nn.Module:
        """Build model ``name`` with its norms made by ``normalizer`` (default: the document's)."""
        spec = self.model(name)
        return build_model(spec, self.normalizer(normalizer or spec.normalizer), dropout)


def build_model(spec: records.ModelSpec, normalizer: records.NormalizerSpec, dropout: float | None = None) -> nn.Module:
    """``spec.factory(norm=..., dropout=...)``; dropout falls back to the recipe's."""
    kwargs: dict[str, Any] = {"norm": resolve(normalizer.factory)}
    dropout = dropout if dropout is not None else spec.recipe.dropout
    if dropout is not None:
        kwargs["dropout"] = dropout
    try:
        return resolve(spec.factory)(**kwargs)
    except BenchError:
        raise
    except Exception as exc:  # third-party code
        raise PluginError(f"model {spec.name!r}: its factory raised {type(exc).__name__}: {first_line(exc)}") from exc


_default: Registry | None = None
_default_key: tuple[str, ...] = ()


def get_registry(extra_modules: Iterable[str] = (), blocked: Iterable[str] = ()) -> Registry:
    """The process-wide registry (rebuilt when the set of extra or blocked modules changes)."""
    global _default, _default_key
    extra_modules, blocked = tuple(extra_modules), tuple(blocked)
    key = (*_env_modules(), "|", *extra_modules, "|", *blocked, str(_autoload_disabled()))
    if _default is None or key != _default_key:
        _default = Registry(make_plugin_manager(extra_modules, blocked))
        _default_key = key
    return _default


def list_models(pattern: str = "*", dataset: str | None = None) -> list[str]:
    """Registered model names matching a shell pattern: ``list_models('mnist*')``."""
    return get_registry().list_models(pattern, dataset)


def create_model(name: str, normalizer: str | None = None, dropout: float | None = None) -> nn.Module:
    """An ``nn.Module`` of model ``name``: ``create_model('mnist_gap', normalizer='layer')``."""
    return get_registry().create_model(name, normalizer, dropout)


def registry_from(ctx: click.Context) -> Registry:
    """The registry for this invocation (``--plugin`` / ``--no-plugin`` applied); for plugin commands too."""
    root = ctx.find_root()
    params = root.params or {}
    return get_registry(params.get("plugins", ()), params.get("blocked", ()))
