"""The epoch skeleton that plain and fused training share.

``train`` (one seed) and ``train_fused`` (several seeds as one stacked computation) both set their
runs up and hand them to ``train_runs``, which holds what a run does around its arithmetic, written
once: the run locks, the lifecycle hooks (each plugin's answer checked), the epoch loop, the
checkpoint of every seed after every epoch, the stop and divergence rules, the records. What differs
is the ``Computation`` they pass in: how one epoch of training and one evaluation are computed,
for one model (``train.PlainComputation``) or for K stacked ones (``fused.FusedComputation``). A plain
run is a computation of one slice; a fused run's seed ``k`` is slice ``k``.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, NamedTuple, Protocol

import torch
from torch.nn import functional as F

from cnnbench.choices import RunStatus
from cnnbench.errors import PluginError, RunInterrupted, Terminated, UsageError
from cnnbench.registry import SafeHooks
from cnnbench.runrecord import EpochStats, RunInfo, RunRecord
from cnnbench.training.checkpoint import FORMAT, checkpoint_path, loader_state, random_states, run_lock, save_checkpoint
from cnnbench.training.outcome import build_record, write_run
from cnnbench.training.plan import RunPlan

Status = Literal["running"] | RunStatus
Scheduler = torch.optim.lr_scheduler.LRScheduler
Batch = tuple[torch.Tensor, torch.Tensor]
Scores = tuple[float, float, torch.Tensor]  # mean loss, accuracy, confusion matrix (rows: true class)


class Fit(NamedTuple):
    """One training pass, per slice: mean loss and accuracy; and the images each slice saw."""

    losses: list[float]
    accs: list[float]
    seen: int


class Computation(Protocol):
    """What differs between plain and fused training: the arithmetic of an epoch over K >= 1 slices."""

    optimizer: torch.optim.Optimizer
    scheduler: Scheduler | None
    eval_loaders: dict[str, Any]  # "val" (with --val-split) and "test": the same batches for every slice

    def training_batches(self) -> Iterable[Any]:
        """The epoch's training batches, before the ``cnnbench_epoch_batches`` hook wraps them."""

    def fit(self, batches: Iterable[Batch]) -> Fit:
        """Train every slice on one pass over ``batches``."""

    def evaluate(self, batches: Iterable[Batch]) -> list[Scores]:
        """Score every slice on ``batches``."""

    def states(self, index: int) -> dict[str, Any]:
        """Slice ``index``'s ``model``, ``optimizer`` and ``ema`` states, as a lone run's checkpoint holds them."""

    def final_model(self, index: int) -> torch.nn.Module:
        """The module whose weights slice ``index``'s record saves."""


@dataclass
class SeedRun:
    """One seed's run: what its checkpoint holds, and where it is in the computation (slice ``index``)."""

    index: int
    seed: int
    run: RunInfo
    loaders: dict[str, Any]
    git: dict[str, Any]
    fused: dict[str, Any] | None = None  # a fused run's seeds: {"index", "run_ids", "seeds"}
    epochs: list[EpochStats] = field(default_factory=list)
    confusion: torch.Tensor | None = None
    status: Status = "running"
    stopped_by: str | None = None
    elapsed: float = 0.0  # the epochs' own time (training and evaluation)
    wall_before: float | None = 0.0  # earlier sessions' wall time (None: a checkpoint that did not keep it)
    resumed: bool = False
    saved: int = 0  # epochs in the checkpoint on disk
    result: tuple[RunRecord, Path] | None = None

    @classmethod
    def from_checkpoint(cls, state: dict[str, Any], index: int, loaders: dict[str, Any]) -> SeedRun:
        """The run a (checked, ``checkpoint.load_checkpoint``) checkpoint continues."""
        epochs = [EpochStats.from_json(e) for e in state["epochs"]]
        return cls(
            index=index, seed=state["seed"], run=RunInfo(**state["run"]), loaders=loaders, git=state["git"],
            fused=state.get("fused"), epochs=epochs, confusion=state.get("confusion"),
            status=state.get("status", "running"), stopped_by=state.get("stopped_by"), elapsed=state["elapsed"],
            wall_before=state.get("wall"), resumed=True, saved=len(epochs),
        )

    def checkpoint(self, plan: RunPlan, work: Computation, started: float) -> dict[str, Any]:
        """Everything to continue this run after ``len(self.epochs)`` epochs (``from_checkpoint`` reads it)."""
        return {
            "format": FORMAT, "run": asdict(self.run), "seed": self.seed, "model_name": plan.model.name,
            "overrides": plan.overrides.to_json(), "plugin_modules": list(plan.plugin_modules),
            "epochs": [e.to_json() for e in self.epochs], "elapsed": self.elapsed, "git": self.git,
            "resumed_at": list(plan.resumed_at), **work.states(self.index),
            "scheduler": work.scheduler.state_dict() if work.scheduler is not None else None,
            "random": random_states(plan.device),
            "loaders": {name: loader_state(loader) for name, loader in self.loaders.items()},
            "confusion": self.confusion, "status": self.status, "stopped_by": self.stopped_by,
            "wall": self.wall(started), "fused": self.fused,
        }

    def wall(self, started: float) -> float | None:
        """Data loading to now, over every session of the run (None when an earlier one did not say)."""
        return None if self.wall_before is None else self.wall_before + time.perf_counter() - started


# --- the run -------------------------------------------------------------------------------------


@dataclass
class Session:
    """One process training some runs: their plan, the computation, the hooks, the data and the clock."""

    plan: RunPlan
    work: Computation
    hooks: SafeHooks
    splits: dict[str, Any]  # split -> (images, labels), for the record's image counts
    started: float  # perf_counter() before the data was loaded


def train_runs(s: Session, runs: list[SeedRun]) -> list[tuple[RunRecord, Path]]:
    """Train ``runs`` (the slices of ``s.work`` that are real runs) to the end; each run's record and path.

    Each run's lock is held throughout and removed however this ends; a run's checkpoint is kept
    until its record is written."""
    with contextlib.ExitStack() as locks:
        for r in runs:
            locks.enter_context(run_lock(s.plan.results_dir, r.run.run_id))
        for r in runs:
            s.hooks.cnnbench_run_start(run=r.run)
        try:
            for r in runs:
                if not r.resumed:
                    save(s, r)  # an interrupted first epoch can be resumed too
            train_epochs(s, runs)
            for r in runs:
                if r.result is None:
                    finish(s, r)
        except KeyboardInterrupt as exc:
            raise interrupted(s.plan, runs, exc) from None
    results = [r.result for r in runs if r.result is not None]
    for record, path in results:
        s.hooks.cnnbench_record_written(record=record, path=path)
    return results


def train_epochs(s: Session, runs: list[SeedRun]) -> None:
    """The remaining epochs. Every running seed's checkpoint is written before any plugin hears of the
    epoch, so a kill leaves the seeds of a fused run at one epoch; a seed that stops or diverges is
    finished at once (in a fused run its slice rides along, ignored)."""
    for epoch in range(len(runs[0].epochs) + 1, s.plan.recipe.epochs + 1):
        live = [r for r in runs if r.status == "running"]  # a resumed run that had stopped trains no more
        if not live:
            break
        t0 = time.perf_counter()
        results = run_epoch(s, live, epoch)
        seconds = time.perf_counter() - t0
        for r, (stats, confusion) in zip(live, results, strict=True):
            r.epochs.append(stats)
            r.confusion, r.elapsed = confusion, r.elapsed + seconds
            save(s, r)
        for r, (stats, _) in zip(live, results, strict=True):
            stop = stop_votes(s.hooks, r.run, stats)
            if stats.train_loss is None or stop:
                r.status, r.stopped_by = stop_reason(stats, epoch)
                save(s, r)
                finish(s, r)


def save(s: Session, r: SeedRun) -> None:
    save_checkpoint(checkpoint_path(s.plan.results_dir, r.run.run_id), r.checkpoint(s.plan, s.work, s.started))
    r.saved = len(r.epochs)


def finish(s: Session, r: SeedRun) -> None:
    """The record (``cnnbench_run_end`` sees it first) and weights; then the checkpoint goes."""
    record = build_record(s.plan, r.run, r.epochs, r.confusion, s.splits, r.elapsed, r.stopped_by, r.git, r.status,
                          r.wall(s.started))
    s.hooks.cnnbench_run_end(run=r.run, record=record)
    r.result = record, write_run(s.plan, record, s.work.final_model(r.index))
    checkpoint_path(s.plan.results_dir, r.run.run_id).unlink(missing_ok=True)


def stop_reason(stats: EpochStats, epoch: int) -> tuple[RunStatus, str]:
    if stats.train_loss is None:
        return "diverged", f"diverged: the training loss was not finite in epoch {epoch}"
    return "stopped", f"a cnnbench_epoch_end hook after epoch {epoch}"


class FusedRunsInterrupted(RunInterrupted):
    """SIGINT / SIGTERM during a fused run: every unfinished seed keeps its checkpoint."""

    def __init__(self, run_ids: list[str], epochs_done: int, results_dir: str, terminated: bool) -> None:
        super().__init__(run_ids[0], epochs_done, results_dir, terminated)
        signal = "SIGTERM" if terminated else "SIGINT"
        saved = f"after epoch {epochs_done}" if epochs_done else "before epoch 1"
        self.args = (f"{signal}: fused runs {', '.join(run_ids)} stopped during epoch {epochs_done + 1}; their "
                     f"checkpoints {saved} are kept. Resume them together, fused as they ran, with: "
                     f"bench resume {run_ids[0]} --results-dir {results_dir}",)


def interrupted(plan: RunPlan, runs: list[SeedRun], exc: KeyboardInterrupt) -> BaseException:
    """What Ctrl-C (or SIGTERM) during training becomes: the command that resumes the unfinished runs."""
    left = [r for r in runs if r.result is None]
    if not left:
        return exc
    terminated, where = isinstance(exc, Terminated), str(plan.results_dir)
    if len(runs) == 1:
        return RunInterrupted(left[0].run.run_id, left[0].saved, where, terminated)
    return FusedRunsInterrupted([r.run.run_id for r in left], min(r.saved for r in left), where, terminated)


# --- one epoch -----------------------------------------------------------------------------------


def run_epoch(s: Session, runs: list[SeedRun], epoch: int) -> list[tuple[EpochStats, torch.Tensor]]:
    """Fit one epoch, step an epoch-wise schedule, evaluate; each run's stats and test confusion matrix.

    ``images_per_s`` is each seed's own: its images over the epoch's training time."""
    plan, work = s.plan, s.work
    t0, lr = time.perf_counter(), work.optimizer.param_groups[0]["lr"]
    batches, source = epoch_batches(plan, runs[0].run, epoch, work.training_batches(), s.hooks)
    with fitting_in_memory(plan, runs, epoch):
        fit = work.fit(checked_batches(batches, epoch, source))
        train_seconds = time.perf_counter() - t0
        if work.scheduler is not None and plan.recipe.scheduler != "onecycle":
            work.scheduler.step()
        scores = {split: work.evaluate(loader) for split, loader in work.eval_loaders.items()}
    seconds, test, val = round(time.perf_counter() - t0, 3), scores["test"], scores.get("val")
    return [
        (EpochStats(
            epoch=epoch, train_loss=finite(fit.losses[k]), train_acc=fit.accs[k], test_loss=finite(test[k][0]),
            test_acc=test[k][1], lr=lr, seconds=seconds, images_per_s=round(fit.seen / train_seconds, 1),
            val_loss=finite(val[k][0]) if val else None, val_acc=val[k][1] if val else None,
        ), test[k][2])
        for k in (r.index for r in runs)
    ]


def finite(value: float) -> float | None:
    """NaN and infinities are not numbers a record can hold (strict JSON): they become None."""
    return value if math.isfinite(value) else None


def fit_pass(batches: Iterable[Batch], step: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, ...]],
             scheduler: Scheduler | None, plan: RunPlan, slices: int) -> Fit:
    """One pass over the training batches, ``step(x, y)`` training every slice on one batch and returning
    ``(losses [K], log-probabilities [K, B, classes], labels [K, B])``.

    The running sums stay on the device: one host sync per epoch, not two per step."""
    device = torch.device(plan.device)
    per_batch_schedule = scheduler if plan.recipe.scheduler == "onecycle" else None
    seen = 0
    correct = torch.zeros(slices, dtype=torch.int64, device=device)
    loss_sum = torch.zeros(slices, dtype=torch.float64, device=device)
    for x, y in batches:
        losses, out, labels = step(x, y)
        if per_batch_schedule is not None:
            per_batch_schedule.step()
        seen += labels.shape[-1]
        loss_sum += losses.detach() * labels.shape[-1]
        correct += (out.argmax(-1) == labels).sum(-1)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return Fit([s / seen for s in loss_sum.tolist()], [c / seen for c in correct.tolist()], seen)


def score_pass(batches: Iterable[Batch], forward: Callable[[torch.Tensor], torch.Tensor],
               num_classes: int) -> list[Scores]:
    """Every slice's mean loss, accuracy and confusion matrix over ``batches``; ``forward(x)`` gives the
    slices' log-probabilities ``[K, B, classes]`` (call it in eval mode, under ``no_grad``)."""
    loss_sum: torch.Tensor | None = None
    counts: torch.Tensor | None = None
    for x, y in batches:
        out = forward(x)
        loss = torch.stack([F.nll_loss(o.float(), y, reduction="sum") for o in out]).double()
        batch_counts = torch.stack([torch.bincount(y * num_classes + o.argmax(1), minlength=num_classes**2)
                                    for o in out])
        loss_sum = loss if loss_sum is None else loss_sum + loss
        counts = batch_counts if counts is None else counts + batch_counts
    if loss_sum is None or counts is None:
        raise PluginError("an evaluation loader yielded no batches")
    confusion = counts.cpu().view(len(counts), num_classes, num_classes)  # one host sync for the whole pass
    n, sums = int(confusion[0].sum()), loss_sum.tolist()
    return [(sums[k] / n, float(confusion[k].diag().sum()) / n, confusion[k].clone()) for k in range(len(sums))]


@contextlib.contextmanager
def fitting_in_memory(plan: RunPlan, runs: list[SeedRun], epoch: int) -> Iterator[None]:
    """Running out of memory in an epoch is one line that says what to change; the checkpoint stays."""
    try:
        yield
    except (RuntimeError, MemoryError) as exc:
        if not is_out_of_memory(exc):
            raise
        fused = plan.launch.get("fused_seeds")
        images = f"{fused} x {plan.recipe.batch_size}" if fused else f"{plan.recipe.batch_size}"
        kept = f"after epoch {runs[0].saved}" if runs[0].saved else "from before epoch 1"
        raise UsageError(
            f"a batch of {images} images did not fit in {plan.device} memory in epoch {epoch}: lower --batch-size "
            f"(the run's checkpoint {kept} is kept)"
        ) from None


OUT_OF_MEMORY = ("can't allocate memory", "out of memory", "ALLOC_FAILED")  # CPU allocator, CUDA, cuDNN / cuBLAS


def is_out_of_memory(exc: BaseException) -> bool:
    """torch's out-of-memory error, another allocation that failed in torch, or Python's ``MemoryError``."""
    return isinstance(exc, torch.OutOfMemoryError | MemoryError) or any(text in str(exc) for text in OUT_OF_MEMORY)


# --- what plugins answer --------------------------------------------------------------------------


def plugin_answers(hooks: SafeHooks, name: str, first: bool = False, **kwargs: Any) -> list[tuple[str, Any]]:
    """``(plugin, answer)`` for each plugin that answers lifecycle hook ``name`` (``SafeHooks.each``)."""
    return hooks.each(name, first=first, **kwargs)


def stop_votes(hooks: SafeHooks, run: RunInfo, stats: EpochStats) -> bool:
    """Every plugin's ``cnnbench_epoch_end`` answer: True stops the run; anything but None or a bool is refused."""
    votes = plugin_answers(hooks, "cnnbench_epoch_end", run=run, epoch=stats)
    for plugin, vote in votes:
        if not isinstance(vote, bool):
            raise PluginError(f"plugin {plugin!r} returned {type(vote).__name__} {vote!r:.40} from cnnbench_epoch_end; "
                              "it returns True to stop the run, or False or None")
    return any(vote for _, vote in votes)


def epoch_batches(plan: RunPlan, run: RunInfo, epoch: int, batches: Iterable[Any],
                  hooks: SafeHooks) -> tuple[Iterable[Any], str]:
    """The epoch's batches as the first plugin answering ``cnnbench_epoch_batches`` wraps them, and where
    they come from (for error messages)."""
    loader = f"loader {plan.loader.name!r} (plugin {plugin_of(plan, 'loader')!r})"
    answers = plugin_answers(hooks, "cnnbench_epoch_batches", first=True, run=run, epoch=epoch,
                             epochs=plan.recipe.epochs, batches=batches, progress=plan.progress)
    if not answers:
        return batches, loader
    plugin, wrapped = answers[0]
    if isinstance(wrapped, str | bytes) or not isinstance(wrapped, Iterable):
        raise PluginError(f"plugin {plugin!r}: cnnbench_epoch_batches returned {type(wrapped).__name__}, "
                          "not an iterable of batches")
    return wrapped, f"{loader} through plugin {plugin!r}'s cnnbench_epoch_batches"


def checked_batches(batches: Iterable[Any], epoch: int, source: str) -> Iterator[Batch]:
    """``batches``, each checked to be an ``(images, labels)`` pair of tensors; an epoch without one is refused."""
    count = 0
    for batch in batches:
        if not (isinstance(batch, tuple | list) and len(batch) == 2 and all(torch.is_tensor(t) for t in batch)):
            raise PluginError(f"training batch {count + 1} of epoch {epoch} is a {type(batch).__name__}, not an "
                              f"(images, labels) pair of tensors; it came from {source}")
        count += 1
        yield batch[0], batch[1]
    if not count:
        raise PluginError(f"epoch {epoch} had no training batches; they come from {source}")


def plugin_of(plan: RunPlan, role: str) -> str:
    """The plugin that supplied the plan's ``role`` (model, dataset, loader ...)."""
    return str((plan.plugins.get(role) or {}).get("plugin", "unknown"))
