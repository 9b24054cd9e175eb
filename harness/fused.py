"""Several seeds in one pass (``bench run --seeds K --fused``): K copies of a model trained as one
batched computation, each written as its own ordinary record.

Each seed is set up exactly as ``train`` sets it up (``seed_everything``, its own loaders, then its
model), so its initial weights, data order and augmentation are those of a lone run. The K models'
parameters and buffers are then stacked (``[K, ...]`` each) and one
``functional_call`` under ``vmap`` runs all K on the stacked batch ``[K, B, C, H, W]``; a
convolution becomes one grouped convolution, which is how a tiny network fills a GPU. The loss is
the sum of every seed's own mean loss (``train.batch_loss`` per seed), so each seed's gradient is
its own, and one optimizer over the stacked tensors is K optimizers: SGD (momentum, Nesterov,
weight decay) and Adam work elementwise, and the schedules set one learning rate per step for all.

Batch norm: the running statistics are stacked buffers ``[K, C]``; under ``vmap`` the in-place
update of a batched buffer by a batched statistic is allowed, so every seed updates its own.
Dropout: ``vmap(randomness="different")`` draws an independent mask per seed, but from the one
global generator, so with dropout > 0 a fused seed is its lone run in distribution, not bit for
bit. Without dropout the per-step losses agree with lone runs to float tolerance (tests/test_fused.py).

A seed that stops early (a hook, a diverged loss) is written at once; its copy rides along in the
batch, ignored, until the others finish. After every epoch each seed gets the checkpoint ``train``
writes (its own weights, optimizer state in the single-model format, loader states), so an
interrupted fused run is continued seed by seed, unfused, with ``bench resume RUN``.

``check_fused`` refuses what this cannot do faithfully: one seed, loaders other than ``memory``,
per-sample augmentations (they draw from the global generators), ``--compile``, ``--channels-last``,
bf16 and ``--ema``. On a CPU fusing does not help: one seed's batch already keeps the cores busy,
and the grouped convolutions are no faster than K plain ones (2 cores: 0.5-1x the throughput of the
seeds run one after another). It is for GPUs, where one tiny network leaves the device mostly idle.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.func import functional_call, vmap
from torch.nn import functional as F

from . import provenance
from . import train as T  # looked up at call time: the fused loop uses the lone loop's loss, loaders, records
from .checkpoint import checkpoint_path, run_lock, save_checkpoint, snapshot
from .errors import BenchError, RunInterrupted, Terminated
from .plan import RunPlan
from .registry import build_model
from .runrecord import EpochStats, RunInfo, RunRecord


def check_fused(plan: RunPlan, seeds: list[int]) -> None:
    """Refuse, in one line and before any data is read, what fused training cannot do (faithfully)."""
    aug = plan.augmentation
    problems = [
        (len(seeds) < 2, "needs at least two seeds (--seeds 3, or --seeds 1,2,3)"),
        (plan.loader.name != "memory", f"trains from the memory loader only, not {plan.loader.name!r}"),
        (aug.kind != "batch", f"needs a batched augmentation; {aug.name!r} works per sample"),
        (plan.compile != "none", "does not combine with --compile"),
        (plan.channels_last, "does not combine with --channels-last"),
        # torch 2.x: autocast is not applied to ops under vmap on CPU (the convolutions stay fp32)
        (plan.precision != "fp32", f"trains in fp32 only, not {plan.precision} (autocast does not reach into vmap)"),
        (plan.recipe.ema is not None, "does not keep an average of the weights (--ema)"),
    ]
    for refused, why in problems:
        if refused:
            raise BenchError(f"--fused {why}")


@dataclass
class SeedRun:
    """One seed of a fused run: what ``train`` keeps in local variables."""

    index: int  # its slice of the stacked tensors
    seed: int
    run: RunInfo
    model: torch.nn.Module  # a plain model; the seed's weights are copied in for checkpoints and the record
    loaders: dict[str, Any]
    epochs: list[EpochStats] = field(default_factory=list)
    confusion: Any = None
    status: str = "running"
    stopped_by: str | None = None
    elapsed: float = 0.0
    saved: int = 0
    result: tuple[RunRecord, Path] | None = None


class Stacked:
    """K models of one architecture as stacked tensors ``[K, ...]``, called as one batched model."""

    def __init__(self, models: list[torch.nn.Module]) -> None:
        # not torch.func.stack_module_state: it wants one class, and a factory may make a class per call
        params, buffers = [dict(m.named_parameters()) for m in models], [dict(m.named_buffers()) for m in models]
        if any(shapes(p) != shapes(params[0]) for p in params) or any(shapes(b) != shapes(buffers[0]) for b in buffers):
            raise BenchError("--fused needs one architecture: the model factory built differently shaped models")
        self.params = {name: torch.stack([p[name].detach() for p in params]).requires_grad_() for name in params[0]}
        self.buffers = {name: torch.stack([b[name] for b in buffers]) for name in buffers[0]}
        self.base = copy.deepcopy(models[0]).to("meta")  # the architecture and the train/eval switch only
        self.size = len(models)

    def _one(self, params: dict[str, Any], buffers: dict[str, Any], x: torch.Tensor) -> torch.Tensor:
        return functional_call(self.base, (params, buffers), (x,))

    def __call__(self, x: torch.Tensor, shared: bool = False) -> torch.Tensor:
        """``x`` is ``[K, B, ...]`` (or ``[B, ...]`` that every seed sees, when ``shared``); ``[K, B, classes]``."""
        batched = vmap(self._one, in_dims=(0, 0, None if shared else 0), randomness="different")
        return batched(self.params, self.buffers, x)

    def train(self, mode: bool = True) -> None:
        self.base.train(mode)

    def parameters(self) -> Iterator[torch.Tensor]:
        return iter(self.params.values())

    def named_parameters(self) -> Iterator[tuple[str, torch.Tensor]]:
        return iter(self.params.items())

    def copy_into(self, model: torch.nn.Module, k: int) -> None:
        """Seed ``k``'s weights and buffers into the plain ``model``."""
        stacked = {**self.params, **self.buffers}
        with torch.no_grad():
            for name, tensor in model.state_dict().items():
                if name in stacked:  # not: the second name of a tied weight, which shares the first's tensor
                    tensor.copy_(stacked[name][k])


def shapes(tensors: dict[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    return {name: tuple(t.shape) for name, t in tensors.items()}


class SeedOptimizer:
    """The fused optimizer as seed ``k``'s lone optimizer: ``state_dict()`` in the single-model format."""

    def __init__(self, optimizer: Any, k: int) -> None:
        self.optimizer, self.k = optimizer, k

    def state_dict(self) -> dict[str, Any]:
        full = self.optimizer.state_dict()
        stacked = [p.shape for group in self.optimizer.param_groups for p in group["params"]]

        def own(value: Any, shape: torch.Size) -> Any:  # per-element state (momentum, moments) is stacked
            return value[self.k].clone() if torch.is_tensor(value) and value.shape == shape else value

        state = {i: {name: own(v, stacked[i]) for name, v in s.items()} for i, s in full["state"].items()}
        return {"state": state, "param_groups": full["param_groups"]}


class FusedBatches:
    """Batch i of every seed's own training loader, stacked: ``x`` ``[K, B, C, H, W]``, ``y`` ``[K, B]``."""

    def __init__(self, loaders: list[Any]) -> None:
        self.loaders = loaders

    def __len__(self) -> int:
        return len(self.loaders[0])

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for batches in zip(*self.loaders, strict=True):
            xs, ys = zip(*batches, strict=True)
            yield torch.stack(xs), torch.stack(ys)


class FusedRunsInterrupted(RunInterrupted):
    """SIGINT / SIGTERM during a fused run: every unfinished seed keeps its checkpoint."""

    def __init__(self, run_ids: list[str], epochs_done: int, results_dir: str, terminated: bool) -> None:
        super().__init__(run_ids[0], epochs_done, results_dir, terminated)
        signal = "SIGTERM" if terminated else "SIGINT"
        saved = f"after epoch {epochs_done}" if epochs_done else "before epoch 1"
        commands = "; ".join(f"bench resume {run_id} --results-dir {results_dir}" for run_id in run_ids)
        self.args = (f"{signal}: fused runs stopped during epoch {epochs_done + 1}; their checkpoints {saved} "
                     f"are kept. Resume each (unfused) with: {commands}",)


def train_fused(plan: RunPlan, seeds: list[int], hooks: Any) -> list[tuple[RunRecord, Path]]:
    """Train ``plan`` for all ``seeds`` as one batched computation; each seed's record and path."""
    check_fused(plan, seeds)
    started, device = time.perf_counter(), torch.device(plan.device)
    if plan.threads:
        torch.set_num_threads(plan.threads)
    git = provenance.git_commit()
    launch = {**plan.launch, "fused_seeds": len(seeds)}  # in the overrides too: a resumed seed's record says it
    plan = dataclasses.replace(plan, launch=launch, overrides=dataclasses.replace(plan.overrides, launch=launch))
    splits = T.load_splits(plan)
    runs = [setup_seed(plan, splits, seed, k, device) for k, seed in enumerate(seeds)]
    T.configure_backends(plan)
    stack = Stacked([r.model for r in runs])
    optimizer, scheduler = T.make_optimizer(stack, plan, len(runs[0].loaders["train"]))

    def save(r: SeedRun) -> None:
        stack.copy_into(r.model, r.index)
        state = snapshot(plan, r.run, r.seed, r.model, SeedOptimizer(optimizer, r.index), scheduler, r.loaders,
                         r.epochs, r.elapsed, git)
        save_checkpoint(checkpoint_path(plan.results_dir, r.run.run_id), {
            **state, "confusion": r.confusion, "status": r.status, "stopped_by": r.stopped_by,
            "wall": time.perf_counter() - started,
        })
        r.saved = len(r.epochs)

    def finish(r: SeedRun) -> None:
        stack.copy_into(r.model, r.index)
        wall = time.perf_counter() - started
        record = T.build_record(plan, r.run, r.epochs, r.confusion, splits, r.elapsed, r.stopped_by, git, r.status,
                                wall)
        hooks.cnnbench_run_end(run=r.run, record=record)
        r.result = record, T.write_run(plan, record, r.model)
        checkpoint_path(plan.results_dir, r.run.run_id).unlink(missing_ok=True)

    with contextlib.ExitStack() as locks:
        for r in runs:
            locks.enter_context(run_lock(plan.results_dir, r.run.run_id))
            hooks.cnnbench_run_start(run=r.run)
        try:
            for r in runs:
                save(r)  # an interrupted first epoch can be resumed too
            for epoch in range(1, plan.recipe.epochs + 1):
                if all(r.status != "running" for r in runs):
                    break
                t0 = time.perf_counter()
                results = fused_epoch(plan, runs, epoch, stack, optimizer, scheduler, hooks)
                seconds = time.perf_counter() - t0
                for r, (stats, confusion) in zip(runs, results, strict=True):
                    if r.status != "running":  # stopped earlier: its slice rides along, ignored
                        continue
                    r.epochs.append(stats)
                    r.confusion, r.elapsed = confusion, r.elapsed + seconds
                    save(r)
                    stop = any(hooks.cnnbench_epoch_end(run=r.run, epoch=stats))
                    if stats.train_loss is None or stop:
                        r.status, r.stopped_by = T.stop_reason(stats, epoch)
                        save(r)
                        finish(r)
            for r in runs:
                if r.result is None:
                    finish(r)
        except KeyboardInterrupt as exc:
            left = [r for r in runs if r.result is None]
            if not left:
                raise
            raise FusedRunsInterrupted([r.run.run_id for r in left], min(r.saved for r in left),
                                       str(plan.results_dir), isinstance(exc, Terminated)) from None
    for r in runs:
        hooks.cnnbench_record_written(record=r.result[0], path=r.result[1])
    return [r.result for r in runs]


def setup_seed(plan: RunPlan, splits: dict[str, Any], seed: int, index: int, device: torch.device) -> SeedRun:
    """Seed ``seed`` as ``train`` sets it up: the generators, loaders and initial weights of a lone run."""
    T.seed_everything(seed)
    loaders = {split: T.make_loader(plan, splits, split, seed, device) for split in splits}
    model = build_model(plan.model, plan.normalizer, plan.recipe.dropout).to(device)
    return SeedRun(index, seed, T.run_info(plan, seed, model), model, loaders)


def fused_epoch(plan: RunPlan, runs: list[SeedRun], epoch: int, stack: Stacked, optimizer: Any, scheduler: Any,
                hooks: Any) -> list[tuple[EpochStats, Any]]:
    """``train.run_epoch`` for all seeds at once: per seed the stats and the test confusion matrix.

    ``images_per_s`` is each seed's own share: its images over the fused epoch's training time."""
    t0, lr = time.perf_counter(), optimizer.param_groups[0]["lr"]
    fused = FusedBatches([r.loaders["train"] for r in runs])
    batches = hooks.cnnbench_epoch_batches(
        run=runs[0].run, epoch=epoch, epochs=plan.recipe.epochs, batches=fused, progress=plan.progress
    )
    if batches is not None and not hasattr(batches, "__iter__"):
        raise BenchError(f"cnnbench_epoch_batches returned {type(batches).__name__}, not an iterable of batches")
    losses, accs, seen = fit_fused(stack, batches or fused, optimizer, scheduler, plan)
    train_seconds = time.perf_counter() - t0
    if scheduler is not None and plan.recipe.scheduler != "onecycle":
        scheduler.step()
    loaders = runs[0].loaders  # evaluation splits are neither shuffled nor augmented: the same for every seed
    val = evaluate_fused(stack, loaders["val"], plan) if "val" in loaders else [(None, None, None)] * stack.size
    test = evaluate_fused(stack, loaders["test"], plan)
    seconds = round(time.perf_counter() - t0, 3)
    return [
        (EpochStats(
            epoch=epoch, train_loss=T.finite(losses[k]), train_acc=accs[k], test_loss=T.finite(test[k][0]),
            test_acc=test[k][1], lr=lr, seconds=seconds, images_per_s=round(seen / train_seconds, 1),
            val_loss=val[k][0] if val[k][0] is None else T.finite(val[k][0]), val_acc=val[k][1],
        ), test[k][2])
        for k in range(stack.size)
    ]


def fit_fused(stack: Stacked, batches: Any, optimizer: Any, scheduler: Any,
              plan: RunPlan) -> tuple[list[float], list[float], int]:
    """One pass over the stacked batches: per seed mean loss and accuracy, and the images each seed saw."""
    device = torch.device(plan.device)
    per_batch_schedule = plan.recipe.scheduler == "onecycle"
    stack.train()
    seen = 0
    correct = torch.zeros(stack.size, dtype=torch.int64, device=device)
    loss_sum = torch.zeros(stack.size, dtype=torch.float64, device=device)
    for x, y in batches:
        out = stack(x)  # fp32 only (check_fused)
        losses = torch.stack([T.batch_loss(out[k], y[k], plan) for k in range(stack.size)])
        optimizer.zero_grad(set_to_none=True)
        losses.sum().backward()  # each seed's parameters get the gradient of its own loss only
        optimizer.step()
        if per_batch_schedule:
            scheduler.step()
        seen += y.shape[1]
        loss_sum += losses.detach() * y.shape[1]
        correct += (out.argmax(2) == y).sum(1)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return [s / seen for s in loss_sum.tolist()], [c / seen for c in correct.tolist()], seen


def evaluate_fused(stack: Stacked, batches: Any, plan: RunPlan) -> list[tuple[float, float, Any]]:
    """``train.evaluate`` for every seed on the same batches: per seed mean loss, accuracy, confusion matrix."""
    classes = plan.dataset.num_classes
    stack.train(False)
    loss_sum, counts = None, None
    with torch.no_grad():
        for x, y in batches:
            out = stack(x, shared=True)
            if plan.recipe.tta == "flip":
                out = torch.logsumexp(torch.stack([out, stack(x.flip(-1), shared=True)]), 0) - math.log(2)
            loss = torch.stack([F.nll_loss(o.float(), y, reduction="sum") for o in out]).double()
            batch_counts = torch.stack([torch.bincount(y * classes + o.argmax(1), minlength=classes**2) for o in out])
            loss_sum = loss if loss_sum is None else loss_sum + loss
            counts = batch_counts if counts is None else counts + batch_counts
    confusion = counts.cpu().view(stack.size, classes, classes)  # one host sync for the whole pass
    n, sums = int(confusion[0].sum()), loss_sum.tolist()
    return [(sums[k] / n, float(confusion[k].diag().sum()) / n, confusion[k].clone()) for k in range(stack.size)]
