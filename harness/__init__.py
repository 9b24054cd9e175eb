"""cnnbench: a plugin-based benchmark harness for small, parameter-budgeted CNNs.

The public API is this package's namespace::

    from cnnbench import hookimpl, ModelSpec, Recipe, DatasetSpec, BenchError
    from cnnbench import list_models, create_model
    from cnnbench.blocks import conv_unit, LogSoftmaxHead, SeedNet   # building blocks (torch)

Importing it is cheap on purpose: torch is imported only by the modules that train or
build models (``cnnbench.training``, ``cnnbench.blocks``), so ``bench --help`` stays fast.

``API_VERSION`` is the plugin API's version (``cnnbench.hookspecs``), apart from the package's
``__version__``; ``docs/architecture.md`` shows the sub-packages and the dependency rule.
"""

from cnnbench import deprecated
from cnnbench.errors import BenchError, DataError, PluginError, RecordError, UsageError
from cnnbench.hookspecs import API_VERSION, hookimpl
from cnnbench.launcher import Launcher, LauncherOptions
from cnnbench.records import (
    AugmentationSpec,
    DatasetSpec,
    LoaderRequest,
    LoaderSpec,
    ModelSpec,
    NormalizerSpec,
    Recipe,
    Target,
    resolve,
)
from cnnbench.registry import create_model, get_registry, list_models
from cnnbench.runrecord import EpochStats, RunInfo, RunRecord

deprecated.add_dict_access(RunInfo, EpochStats, RunRecord)  # plugin API 0.1 hooks read dicts
deprecated.install_old_import_paths()  # import harness, cnnbench.train ... (0.1 paths)

__version__ = "0.3.0"
__all__ = [
    "API_VERSION",
    "AugmentationSpec",
    "BenchError",
    "DataError",
    "DatasetSpec",
    "EpochStats",
    "Launcher",
    "LauncherOptions",
    "LoaderRequest",
    "LoaderSpec",
    "ModelSpec",
    "NormalizerSpec",
    "PluginError",
    "Recipe",
    "RecordError",
    "RunInfo",
    "RunRecord",
    "Target",
    "UsageError",
    "__version__",
    "create_model",
    "get_registry",
    "hookimpl",
    "list_models",
    "resolve",
]
