"""Hook specifications: the whole plugin API of cnnbench, one documented function per hook.

A plugin is a module (or object) with functions named like these, decorated with
``cnnbench.hookimpl``. cnnbench's built-ins (``cnnbench.plugins``) are such modules; a
third-party plugin is listed under the ``cnnbench`` entry-point group of its distribution,
or named with ``bench --plugin MODULE`` / ``BENCH_PLUGINS``.

Registration hooks return a list of small frozen records (``cnnbench.ModelSpec`` …); the
core collects them from every plugin and refuses two plugins that register the same name.
Heavy things (torch modules, data files) are reached through factories, so listing is cheap:
import torch inside factories, never at a plugin module's top level.

Lifecycle hooks receive typed run data (``cnnbench.RunInfo``, ``EpochStats``, ``RunRecord``).
The console output is itself the built-in plugin ``console``, made of these hooks:
``bench --no-plugin console`` silences it, and any plugin can print its own.

Errors a user can fix are raised as ``cnnbench.BenchError`` with a one-line message; the
command line prints it and exits non-zero. Any other exception from plugin code is reported
as one line naming the plugin.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from .records import AugmentationSpec, DatasetSpec, LauncherSpec, LoaderSpec, ModelSpec, NormalizerSpec, Target
    from .runrecord import EpochStats, RunInfo, RunRecord

PROJECT = "cnnbench"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


# --- registration -----------------------------------------------------------------


@hookspec
def cnnbench_datasets() -> list[DatasetSpec]:
    """Return the datasets this plugin provides.

    ``DatasetSpec.load(data_dir: Path, split: "train" | "test")`` receives the data folder
    the core resolved (``--data-dir``, else ``$BENCH_DATA_DIR``, else ``./data``) and returns
    ``(images, labels)``: the whole split in memory, uint8 ``N x C x H x W`` and int64 ``N``.
    Missing or corrupt files raise ``BenchError`` naming the file; nothing is written into
    ``data_dir``. ``mean`` / ``std`` are per channel, in units of pixel / 255 (the [0, 1]
    scale, as torchvision's ``Normalize`` after ``ToTensor``).
    """


@hookspec
def cnnbench_models() -> list[ModelSpec]:
    """Return the networks this plugin provides, each with its documented parameter count
    and default recipe.

    ``ModelSpec.factory(norm, dropout)`` returns an ``nn.Module``: ``norm`` is a callable
    ``channels -> nn.Module`` from the chosen normalizer (build every normalization layer
    with it), ``dropout`` a float (present only when the recipe or ``--dropout`` sets one).
    The module maps a float batch ``N x C x H x W`` (normalized with the dataset's mean and
    std) to **log-probabilities** ``N x classes`` (``log_softmax`` output): the trainer uses
    ``F.nll_loss``. ``cnnbench.blocks.LogSoftmaxHead`` ends a network that way.
    """


@hookspec
def cnnbench_augmentations() -> list[AugmentationSpec]:
    """Return training-time augmentations, batched (on the device) or per sample.

    ``kind="batch"``: ``factory(dataset)`` returns ``fn(x, generator) -> x``, where ``x`` is a
    float batch in [0, 1] (``N x C x H x W``, before normalization) on the run's device and
    ``generator`` a ``torch.Generator`` on that same device, seeded from the run's seed;
    draw every random number from it. ``kind="sample"``: ``factory(dataset)`` returns
    ``fn(image) -> image`` on one ``H x W x C`` uint8 numpy array (CPU). ``datasets``
    restricts it to those datasets (checked before the run starts).
    """


@hookspec
def cnnbench_normalizers() -> list[NormalizerSpec]:
    """Return normalization layers models can be built with (``--normalizer``).

    ``factory(channels)`` returns an ``nn.Module`` that keeps the shape of ``N x C x H x W``.
    """


@hookspec
def cnnbench_loaders() -> list[LoaderSpec]:
    """Return data loaders (``--loader``).

    ``factory(request: LoaderRequest)`` returns an object with ``len()`` (batches per pass)
    that iterates ``(x, y)``: ``x`` float ``N x C x H x W`` normalized with the dataset's
    mean and std, augmented when ``request.augmentation`` is set, ``y`` int64 ``N``, both on
    ``request.device``. Each ``iter()`` is one epoch; with ``shuffle`` every epoch has its own
    order, fixed by ``request.seed``. A loader that also has ``state_dict()`` /
    ``load_state_dict(state)`` (tensors, numbers, strings, lists and dicts only) is saved in
    each checkpoint, so a resumed run draws the same batches as an uninterrupted one.
    """


@hookspec
def cnnbench_targets() -> list[Target]:
    """Return published targets (accuracy under a parameter and epoch budget) that the
    leaderboard checks runs against."""


@hookspec
def cnnbench_launchers() -> list[LauncherSpec]:
    """Return ways to run the jobs of a sweep (``bench sweep --launcher NAME``), as Hydra's
    launcher plugins do: ``LauncherSpec.factory(options)`` gives an object with
    ``launch(jobs, on_start, on_done) -> list[JobResult]``. Each job runs with
    ``cnnbench.jobs.run_job``; the launcher decides where and how many at once."""


@hookspec
def cnnbench_commands() -> list[Any]:
    """Return ``click.Command`` objects to add to ``bench`` as subcommands.

    Keep the module cheap to import (click only): ``bench --help`` lists these commands.
    A command that clashes with a built-in one is an error naming the plugin.
    """


# --- run lifecycle ------------------------------------------------------------------


@hookspec
def cnnbench_run_start(run: RunInfo) -> None:
    """Called once before the first epoch, after the data is loaded and the model built."""


@hookspec(firstresult=True)
def cnnbench_epoch_batches(
    run: RunInfo, epoch: int, epochs: int, batches: Iterable[Any], progress: bool
) -> Iterable[Any] | None:
    """Return an iterable that yields the training ``batches`` of ``epoch`` (of ``epochs``),
    to wrap them, e.g. in a progress bar; ``progress`` is False under ``--no-progress``.
    The first non-None answer is used."""


@hookspec
def cnnbench_epoch_end(run: RunInfo, epoch: EpochStats) -> bool | None:
    """Called after each epoch's evaluation with that epoch's metrics.

    Return ``True`` to stop the run after this epoch (the record says who stopped it).
    """


@hookspec
def cnnbench_run_end(run: RunInfo, record: RunRecord) -> None:
    """Called after training with the complete run record, before it is written.

    A plugin may add its own keys to ``record.extra``; they are saved in the record.
    """


@hookspec
def cnnbench_record_written(record: RunRecord, path: Path) -> None:
    """Called after the record (and weights) of a run are on disk at ``path``."""


@hookspec
def cnnbench_runs_finished(records: list[RunRecord]) -> None:
    """Called once after ``bench run`` trained every seed it was asked for."""
