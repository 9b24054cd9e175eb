"""The training loop: one plan, one seed -> one run record.

Deliberately plain (airbench-style): load the data into memory, build the model, train with
SGD/Adam and a schedule, evaluate on the test set after every epoch, write a record of what
was measured. ``train`` reads top to bottom on one screen; each step is its own function.
Console output comes from the ``console`` plugin through the lifecycle hooks.
"""

from __future__ import annotations

import io
import math
import random
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from . import provenance
from .checkpoint import checkpoint_path, restore, run_lock, save_checkpoint, snapshot
from .ema import WeightEMA
from .errors import BenchError, RunInterrupted, Terminated
from .plan import RunPlan
from .records import LoaderRequest, resolve
from .registry import build_model
from .runrecord import EpochStats, RunInfo, RunRecord, new_run_id, write_record


def train(plan: RunPlan, seed: int, hooks: Any, resume: dict[str, Any] | None = None) -> tuple[RunRecord, Path]:
    """Train ``plan`` with ``seed`` (or continue the checkpoint ``resume``); returns the record and its path."""
    started, device = time.perf_counter(), torch.device(plan.device)
    if plan.threads:
        torch.set_num_threads(plan.threads)
    git = resume["git"] if resume else provenance.git_commit()  # the tree may change during a long run
    seed_everything(seed)
    splits = load_splits(plan)
    loaders = {split: make_loader(plan, splits, split, seed, device) for split in splits}
    model = build_model(plan.model, plan.normalizer, plan.recipe.dropout).to(device)
    configure_backends(plan)
    net, ema = prepare_model(model, plan), make_ema(model, plan)
    optimizer, scheduler = make_optimizer(model, plan, len(loaders["train"]))
    run = RunInfo(**resume["run"]) if resume else run_info(plan, seed, model)
    epochs = [EpochStats.from_json(e) for e in resume["epochs"]] if resume else []
    elapsed, confusion = (resume["elapsed"], resume.get("confusion")) if resume else (0.0, None)
    wall_before = resume.get("wall") if resume else 0.0  # earlier sessions (None: an older checkpoint)
    if resume:
        restore(resume, model, optimizer, scheduler, loaders, plan.device, ema)
    ckpt, saved = checkpoint_path(plan.results_dir, run.run_id), len(epochs)
    status, stopped_by = (resume.get("status", "running"), resume.get("stopped_by")) if resume else ("running", None)

    def save() -> None:
        nonlocal saved
        state = snapshot(plan, run, seed, model, optimizer, scheduler, loaders, epochs, elapsed, git, ema)
        wall = None if wall_before is None else wall_before + time.perf_counter() - started
        save_checkpoint(ckpt, {**state, "confusion": confusion, "status": status, "stopped_by": stopped_by,
                               "wall": wall})
        saved = len(epochs)

    with run_lock(plan.results_dir, run.run_id):
        hooks.cnnbench_run_start(run=run)
        try:
            if not resume:
                save()  # an interrupted first epoch can be resumed too
            for epoch in range(len(epochs) + 1, plan.recipe.epochs + 1):
                if status != "running":  # a resumed run that had stopped or diverged trains no more
                    break
                t0 = time.perf_counter()
                stats, confusion = run_epoch(plan, run, epoch, net, optimizer, scheduler, loaders, hooks, ema)
                epochs.append(stats)
                elapsed += time.perf_counter() - t0
                save()
                stop = any(hooks.cnnbench_epoch_end(run=run, epoch=stats))
                if stats.train_loss is None or stop:
                    status, stopped_by = stop_reason(stats, epoch)
                    save()
            wall = None if wall_before is None else wall_before + time.perf_counter() - started  # load -> last eval
            record = build_record(plan, run, epochs, confusion, splits, elapsed, stopped_by, git, status, wall)
            hooks.cnnbench_run_end(run=run, record=record)
            path = write_run(plan, record, ema.module if ema is not None else model)
            ckpt.unlink(missing_ok=True)
        except KeyboardInterrupt as exc:
            raise RunInterrupted(run.run_id, saved, str(plan.results_dir), isinstance(exc, Terminated)) from None
    hooks.cnnbench_record_written(record=record, path=path)
    return record, path


def run_epoch(plan: RunPlan, run: RunInfo, epoch: int, model: torch.nn.Module, optimizer: Any, scheduler: Any,
              loaders: dict[str, Any], hooks: Any, ema: Any = None) -> tuple[EpochStats, Any]:
    """Fit one epoch, step an epoch-wise schedule, evaluate (the EMA weights when there are any);
    the stats and the test confusion matrix."""
    t0, lr = time.perf_counter(), optimizer.param_groups[0]["lr"]
    batches = hooks.cnnbench_epoch_batches(
        run=run, epoch=epoch, epochs=plan.recipe.epochs, batches=loaders["train"], progress=plan.progress
    )
    if batches is not None and not hasattr(batches, "__iter__"):
        raise BenchError(f"cnnbench_epoch_batches returned {type(batches).__name__}, not an iterable of batches")
    train_loss, train_acc, seen = fit_epoch(model, batches or loaders["train"], optimizer, scheduler, plan, ema)
    train_seconds = time.perf_counter() - t0
    if scheduler is not None and plan.recipe.scheduler != "onecycle":
        scheduler.step()
    judged, classes, tta = ema.module if ema is not None else model, plan.dataset.num_classes, plan.recipe.tta
    val_loss, val_acc, _ = evaluate(judged, loaders["val"], classes, plan.precision, tta) if "val" in loaders \
        else (None, None, None)
    test_loss, test_acc, confusion = evaluate(judged, loaders["test"], classes, plan.precision, tta)
    stats = EpochStats(
        epoch=epoch, train_loss=finite(train_loss), train_acc=train_acc, test_loss=finite(test_loss),
        test_acc=test_acc, lr=lr, seconds=round(time.perf_counter() - t0, 3),
        images_per_s=round(seen / train_seconds, 1), val_loss=val_loss if val_loss is None else finite(val_loss),
        val_acc=val_acc,
    )
    return stats, confusion


def stop_reason(stats: EpochStats, epoch: int) -> tuple[str, str]:
    if stats.train_loss is None:
        return "diverged", f"diverged: the training loss was not finite in epoch {epoch}"
    return "stopped", f"a cnnbench_epoch_end hook after epoch {epoch}"


def finite(value: float) -> float | None:
    """NaN and infinities are not numbers a record can hold (strict JSON): they become None."""
    return value if math.isfinite(value) else None


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


VAL_SHUFFLE_SEED = 2024  # one fixed held-out slice for every seed and run, so validation scores compare


def load_splits(plan: RunPlan) -> dict[str, tuple[Any, Any]]:
    """Both splits in memory, cut to ``--limit-train`` / ``--limit-test`` when given; with ``--val-split N``
    a third, ``val``: N training images picked by a fixed shuffle and removed from ``train``."""
    load = resolve(plan.dataset.load)
    splits = {}
    for split, limit in (("train", plan.limit_train), ("test", plan.limit_test)):
        images, labels = load(plan.data_dir, split)
        splits[split] = (images[:limit], labels[:limit]) if limit else (images, labels)
    if plan.val_split:
        images, labels = splits["train"]
        if plan.val_split >= len(labels):
            raise BenchError(f"--val-split {plan.val_split} leaves no training images (there are {len(labels)})")
        order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(VAL_SHUFFLE_SEED))
        held, kept = order[: plan.val_split].sort().values, order[plan.val_split :].sort().values
        splits["train"], splits["val"] = (images[kept], labels[kept]), (images[held], labels[held])
    return splits


def make_loader(plan: RunPlan, splits: dict[str, Any], split: str, seed: int, device: torch.device) -> Any:
    images, labels = splits[split]
    augment = split == "train" and plan.augmentation.name != "none"
    request = LoaderRequest(
        dataset=plan.dataset, split=split, images=images, labels=labels,
        batch_size=plan.recipe.batch_size,
        shuffle=split == "train", seed=seed, device=device, augmentation=plan.augmentation if augment else None,
        data_dir=str(plan.data_dir), options=dict(plan.loader_options),
    )
    return resolve(plan.loader.factory)(request)


def make_optimizer(model: torch.nn.Module, plan: RunPlan, steps_per_epoch: int) -> tuple[Any, Any]:
    recipe = plan.recipe
    if recipe.optimizer == "sgd":
        opt = torch.optim.SGD(
            model.parameters(), lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay,
            nesterov=recipe.nesterov,
        )
    else:
        opt = torch.optim.Adam(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    if recipe.scheduler == "step":
        return opt, torch.optim.lr_scheduler.StepLR(opt, step_size=recipe.step_size, gamma=recipe.gamma)
    if recipe.scheduler == "onecycle":
        rising = recipe.warmup_epochs / recipe.epochs if recipe.warmup_epochs is not None else 0.3
        return opt, torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=recipe.lr, epochs=recipe.epochs, steps_per_epoch=steps_per_epoch, pct_start=rising
        )
    return opt, None


def autocast(device: torch.device, precision: str) -> Any:
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return torch.autocast(device.type, enabled=False)


def configure_backends(plan: RunPlan) -> None:
    """cuDNN picks the fastest convolution algorithms for the (fixed) batch shapes on a GPU."""
    if torch.device(plan.device).type == "cuda":
        torch.backends.cudnn.benchmark = True


def prepare_model(model: torch.nn.Module, plan: RunPlan) -> torch.nn.Module:
    """What the loop calls: ``model`` in channels_last and/or compiled. The weights stay ``model``'s
    (a compiled module shares them), so records, checkpoints and the optimizer use ``model`` itself.

    The last partial batch has its own shape; ``torch.compile`` compiles (or on a GPU with
    ``reduce-overhead`` captures) a second graph for it instead of dropping it."""
    if plan.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if plan.compile != "none":
        return torch.compile(model, mode=None if plan.compile == "default" else plan.compile)
    return model


def make_ema(model: torch.nn.Module, plan: RunPlan) -> WeightEMA | None:
    """The moving average of the weights the run evaluates and saves (``recipe.ema``), or None."""
    return WeightEMA(model, plan.recipe.ema) if plan.recipe.ema is not None else None


def batch_loss(out: torch.Tensor, y: torch.Tensor, plan: RunPlan) -> torch.Tensor:
    """Mean training loss of a batch of log-probabilities ``out`` (float32, label smoothing applied)."""
    smoothing = plan.recipe.label_smoothing
    nll = F.nll_loss(out.float(), y)
    if not smoothing:
        return nll
    return (1 - smoothing) * nll - smoothing * out.float().mean(1).mean()


def train_step(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, optimizer: Any,
               plan: RunPlan) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimisation step on one batch; ``(loss, log-probabilities)``, both still on the device.

    ``bench speed`` times exactly this function, so the harness and its speed figure agree."""
    if plan.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with autocast(x.device, plan.precision):
        out = model(x)
        loss = batch_loss(out, y, plan)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss, out


def fit_epoch(model: torch.nn.Module, batches: Any, optimizer: Any, scheduler: Any, plan: RunPlan,
              ema: Any = None) -> tuple:
    """One pass over the training batches; ``(mean loss, accuracy, images seen)``.

    The running sums stay on the device: one host sync per epoch, not two per step.
    """
    device = torch.device(plan.device)
    per_batch_schedule = plan.recipe.scheduler == "onecycle"
    model.train()
    seen = 0
    correct = torch.zeros((), dtype=torch.int64, device=device)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    for x, y in batches:
        loss, out = train_step(model, x, y, optimizer, plan)
        if ema is not None:
            ema.update(model)
        if per_batch_schedule:
            scheduler.step()
        seen += len(y)
        loss_sum += loss.detach() * len(y)
        correct += (out.argmax(1) == y).sum()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return loss_sum.item() / seen, correct.item() / seen, seen


def predict(model: torch.nn.Module, x: torch.Tensor, tta: str = "none") -> torch.Tensor:
    """Log-probabilities for a batch; ``tta="flip"``: of the mean probability of each image and its mirror."""
    out = model(x)
    if tta == "flip":
        out = torch.logsumexp(torch.stack([out.float(), model(x.flip(-1)).float()]), 0) - math.log(2)
    return out


def evaluate(model: torch.nn.Module, batches: Any, num_classes: int, precision: str,
             tta: str = "none") -> tuple[float, float, Any]:
    """Mean loss, accuracy and the confusion matrix (rows: true class) over ``batches``.

    ``tta="flip"`` scores each image by the mean probability of it and its mirror image."""
    model.eval()
    loss_sum, counts, device = None, None, next(model.parameters()).device
    with torch.no_grad():
        for x, y in batches:
            with autocast(device, precision):
                out = predict(model, x, tta)
            loss = F.nll_loss(out.float(), y, reduction="sum").double()
            batch_counts = torch.bincount(y * num_classes + out.argmax(1), minlength=num_classes**2)
            loss_sum = loss if loss_sum is None else loss_sum + loss
            counts = batch_counts if counts is None else counts + batch_counts
    confusion = counts.cpu().view(num_classes, num_classes)  # one host sync for the whole pass
    n = int(confusion.sum())
    return float(loss_sum) / n, float(confusion.diag().sum()) / n, confusion


def run_info(plan: RunPlan, seed: int, model: torch.nn.Module) -> RunInfo:
    return RunInfo(
        run_id=new_run_id(plan.model.name, seed), model=plan.model.name, dataset=plan.dataset.name,
        normalizer=plan.normalizer.name, augmentation=plan.augmentation.name, loader=plan.loader.name,
        params=sum(p.numel() for p in model.parameters()), recipe=asdict(plan.recipe), seed=seed,
        device=plan.device, precision=plan.precision,
    )


def build_record(
    plan: RunPlan, run: RunInfo, epochs: list[EpochStats], confusion: Any, splits: dict[str, Any],
    elapsed: float, stopped_by: str | None, git: dict[str, Any], status: str = "complete", wall: float | None = None,
) -> RunRecord:
    """The run record: what was run, what every epoch measured, and where (machine, versions, commit).

    ``elapsed`` sums the epochs (training and evaluation); ``wall`` runs from loading the data to the
    final evaluation, model building and compilation included: the clock a target's time budget checks."""
    status = "complete" if status == "running" else status
    best = max(epochs, key=lambda e: e.test_acc)
    per_class = (confusion.diag().float() / confusion.sum(1).clamp(min=1)).tolist()
    names = plan.dataset.class_names or tuple(str(i) for i in range(plan.dataset.num_classes))
    return RunRecord(
        **asdict(run), created=run.run_id.split("-", 1)[0], command=provenance.command_line(),
        source=plan.model.source, epochs=epochs, epochs_run=len(epochs), final_test_acc=epochs[-1].test_acc,
        best_test_acc=best.test_acc, best_epoch=best.epoch, per_class_acc=dict(zip(names, per_class, strict=False)),
        confusion=confusion.tolist(), train_images=len(splits["train"][1]), test_images=len(splits["test"][1]),
        total_seconds=round(elapsed, 2), images_per_s=round(float(np.median([e.images_per_s or 0 for e in epochs])), 1),
        stopped_by=stopped_by, threads=torch.get_num_threads(), machine=provenance.machine(torch.device(plan.device)),
        versions=provenance.library_versions(), git=git, plugins=plan.plugins, status=status,
        resumed_at=list(plan.resumed_at), launch=plan.launch,
        wall_seconds=round(wall, 2) if wall is not None else None, fast_path=fast_path(plan),
        val_images=len(splits["val"][1]) if "val" in splits else None,
        weights=f"{run.run_id}.pt" if plan.save_weights and status != "diverged" else None,
    )


def fast_path(plan: RunPlan) -> dict[str, Any]:
    """The speed options a run used (part of its configuration in the leaderboard)."""
    return {
        "channels_last": plan.channels_last, "compile": plan.compile,
        "cudnn_benchmark": torch.device(plan.device).type == "cuda",
    }


def write_run(plan: RunPlan, record: RunRecord, model: torch.nn.Module) -> Path:
    """The record and, when it names them, the final weights (``runrecord.write_record``)."""
    weights = None
    if record.weights:
        buffer = io.BytesIO()
        torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, buffer)
        weights = buffer.getvalue()
    try:
        return write_record(record, plan.results_dir, weights)
    except (TypeError, ValueError) as exc:  # raised before anything is written
        raise BenchError(f"a cnnbench_run_end hook put a value into the record that is not JSON ({exc})") from None
