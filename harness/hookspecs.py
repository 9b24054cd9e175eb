"""Hook specifications: the whole plugin API of cnnbench.

Registration hooks return a list of small typed records (see ``harness.records``);
the core collects them from every plugin and refuses two plugins that register the
same name. Lifecycle hooks let a plugin watch (and stop) a run.

A plugin is any module with functions named like these and decorated with
``harness.hookimpl``, listed under the ``cnnbench`` entry-point group.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from .records import (
        AugmentationSpec,
        DatasetSpec,
        LoaderSpec,
        ModelSpec,
        NormalizerSpec,
        Target,
    )

PROJECT = "cnnbench"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


# --- registration -----------------------------------------------------------------


@hookspec
def cnnbench_datasets() -> list[DatasetSpec]:
    """Return the datasets this plugin provides.

    A dataset's ``load`` factory must hold the whole split in memory as uint8 tensors
    and raise ``BenchError`` naming the file when its data is missing or corrupt.
    """


@hookspec
def cnnbench_models() -> list[ModelSpec]:
    """Return the networks this plugin provides, each with its documented parameter
    count and default recipe. Factories accept ``norm`` (a callable ``channels ->
    nn.Module`` from the normalizer hook) and ``dropout``."""


@hookspec
def cnnbench_augmentations() -> list[AugmentationSpec]:
    """Return training-time augmentations, batched (on the device) or per-sample."""


@hookspec
def cnnbench_normalizers() -> list[NormalizerSpec]:
    """Return normalization layers models can be built with (``--normalizer``)."""


@hookspec
def cnnbench_loaders() -> list[LoaderSpec]:
    """Return data loaders (``--loader``) that turn a dataset split into batches on
    the run's device."""


@hookspec
def cnnbench_targets() -> list[Target]:
    """Return published targets (accuracy under a parameter and epoch budget) that
    the leaderboard checks runs against."""


# --- run lifecycle ------------------------------------------------------------------


@hookspec
def cnnbench_run_start(run: dict[str, Any]) -> None:
    """Called once before the first epoch with the run's metadata (model, recipe, seed…)."""


@hookspec
def cnnbench_epoch_end(run: dict[str, Any], epoch: dict[str, Any]) -> bool | None:
    """Called after each epoch's evaluation with that epoch's metrics.

    Return ``True`` to stop the run after this epoch (the record says who stopped it).
    """


@hookspec
def cnnbench_run_end(run: dict[str, Any], record: dict[str, Any]) -> None:
    """Called after training with the complete run record, before it is written."""
