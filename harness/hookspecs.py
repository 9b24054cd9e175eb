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

Errors a user can fix are raised as ``cnnbench.BenchError`` (or one of its kinds:
``DataError`` for a missing or corrupt data file, ``UsageError`` for an option that cannot work)
with a one-line message; the command line prints it and exits non-zero. Any other exception
from plugin code is reported as one line naming the plugin (``PluginError``).

Versions: this module is the plugin API, versioned as ``API_VERSION`` (``"major.minor"``), apart
from the package's own version. A minor version adds hooks or fields; a major version changes
what an existing hook receives or must return. Each hook says since which API version it exists
(``versionadded``) and what changed (``versionchanged``). A plugin module may declare the API it
needs as ``CNNBENCH_API = "1.0"``; one needing a newer API than the installed cnnbench is refused
in one line. API 0.1 was the ``harness`` import path with dict-receiving lifecycle hooks; what
still works of it, with a ``DeprecationWarning``, lives in ``cnnbench.deprecated``.
"""

# mypy: disable-error-code="empty-body"
# (hook specifications are signatures with docstrings; pluggy never calls their bodies)
from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from cnnbench.records import (
        AugmentationSpec,
        DatasetSpec,
        LauncherSpec,
        LoaderSpec,
        ModelSpec,
        NormalizerSpec,
        Target,
    )
    from cnnbench.runrecord import EpochStats, RunInfo, RunRecord

PROJECT = "cnnbench"
API_VERSION = "1.1"


def parse_api_version(text: str) -> tuple[int, int]:
    """``"1.0"`` -> ``(1, 0)``; anything else raises ``ValueError``."""
    major, dot, minor = text.strip().partition(".")
    if not (major.isdigit() and minor.isdigit() and dot):
        raise ValueError(f"not a plugin API version: {text!r}")
    return int(major), int(minor)
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

    .. versionadded:: 0.1
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

    .. versionadded:: 0.1
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

    .. versionadded:: 0.1
    """


@hookspec
def cnnbench_normalizers() -> list[NormalizerSpec]:
    """Return normalization layers models can be built with (``--normalizer``).

    ``factory(channels)`` returns an ``nn.Module`` that keeps the shape of ``N x C x H x W``.

    .. versionadded:: 0.1
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

    .. versionadded:: 0.1
    .. versionchanged:: 1.0
       A loader with ``state_dict()`` / ``load_state_dict()`` is saved in checkpoints.
    """


@hookspec
def cnnbench_targets() -> list[Target]:
    """Return published targets (accuracy under a parameter and epoch budget) that the
    leaderboard checks runs against.

    .. versionadded:: 0.1
    .. versionchanged:: 1.0
       ``Target.max_seconds`` (time budgets per hardware class) and ``allow_tta``.
    .. versionchanged:: 1.1
       Deployment budgets: ``Target.min_int8_acc`` and ``max_model_bytes``, checked on ``bench deploy``'s
       measurements; ``min_test_acc=0`` for a target about the int8 model alone.
    """


@hookspec
def cnnbench_launchers() -> list[LauncherSpec]:
    """Return ways to run the jobs of a sweep (``bench sweep --launcher NAME``), after Hydra's
    launcher plugins: ``LauncherSpec(name, TheClass, description)``, where ``TheClass`` subclasses
    ``cnnbench.launcher.Launcher`` and sets ``Options`` to its own frozen
    ``cnnbench.launcher.LauncherOptions`` dataclass (fields declared with ``cnnbench.launcher.option``);
    each field becomes a ``bench sweep --NAME-FIELD`` option. ``launch(jobs, on_start, on_done) ->
    list[JobResult]`` runs the jobs it is given, already claimed (``self.claims``), each with
    ``cnnbench.sweep.jobs.run_job``; the launcher decides where and how many at once. ``name`` is
    lowercase letters, digits and '-'.

    .. versionadded:: 1.0
    """


@hookspec
def cnnbench_commands() -> list[Any]:
    """Return ``click.Command`` objects to add to ``bench`` as subcommands.

    Keep the module cheap to import (click only): ``bench --help`` lists these commands.
    A command that clashes with a built-in one is an error naming the plugin.

    .. versionadded:: 1.0
    """


# --- run lifecycle ------------------------------------------------------------------


@hookspec
def cnnbench_run_start(run: RunInfo) -> None:
    """Called once before the first epoch, after the data is loaded and the model built.

    .. versionadded:: 0.1
    .. versionchanged:: 1.0
       ``run`` is a ``cnnbench.RunInfo`` (was a dict; ``run['model']`` still works, deprecated).
    """


@hookspec(firstresult=True)
def cnnbench_epoch_batches(
    run: RunInfo, epoch: int, epochs: int, batches: Iterable[Any], progress: bool
) -> Iterable[Any] | None:
    """Return an iterable that yields the training ``batches`` of ``epoch`` (of ``epochs``),
    to wrap them, e.g. in a progress bar; ``progress`` is False under ``--no-progress``.
    The first non-None answer is used.

    .. versionadded:: 1.0
    """


@hookspec
def cnnbench_epoch_end(run: RunInfo, epoch: EpochStats) -> bool | None:
    """Called after each epoch's evaluation with that epoch's metrics.

    Return ``True`` to stop the run after this epoch (the record says who stopped it).

    .. versionadded:: 0.1
    .. versionchanged:: 1.0
       ``run`` and ``epoch`` are ``RunInfo`` / ``EpochStats`` (were dicts); a result other than
       ``None``, ``True`` or ``False`` is an error naming the plugin.
    """


@hookspec
def cnnbench_run_end(run: RunInfo, record: RunRecord) -> None:
    """Called after training with the complete run record, before it is written.

    A plugin may add its own keys to ``record.extra``; they are saved in the record.

    .. versionadded:: 0.1
    .. versionchanged:: 1.0
       ``run`` and ``record`` are ``RunInfo`` / ``RunRecord`` (were dicts).
    """


@hookspec
def cnnbench_record_written(record: RunRecord, path: Path) -> None:
    """Called after the record (and weights) of a run are on disk at ``path``.

    .. versionadded:: 1.0
    """


@hookspec
def cnnbench_runs_finished(records: list[RunRecord]) -> None:
    """Called once after ``bench run`` trained every seed it was asked for.

    .. versionadded:: 1.0
    """
