"""cnnbench: a plugin-based benchmark harness for small, parameter-budgeted CNNs.

The public API is this package's namespace::

    from cnnbench import hookimpl, ModelSpec, Recipe, DatasetSpec, BenchError
    from cnnbench import list_models, create_model
    from cnnbench.blocks import conv_unit, LogSoftmaxHead, SeedNet   # building blocks (torch)

Importing it is cheap on purpose: torch is imported only by the modules that train or
build models (``cnnbench.train``, ``cnnbench.blocks``), so ``bench --help`` stays fast.
"""

from .errors import BenchError
from .hookspecs import hookimpl
from .records import (
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
from .registry import create_model, get_registry, list_models
from .runrecord import EpochStats, RunInfo, RunRecord

__version__ = "0.1.0"
__all__ = [
    "AugmentationSpec",
    "BenchError",
    "DatasetSpec",
    "EpochStats",
    "LoaderRequest",
    "LoaderSpec",
    "ModelSpec",
    "NormalizerSpec",
    "Recipe",
    "RunInfo",
    "RunRecord",
    "Target",
    "__version__",
    "create_model",
    "get_registry",
    "hookimpl",
    "list_models",
    "resolve",
]
