"""The training loop: one plan, one seed -> one run record.

Deliberately plain (airbench-style): load the data into memory, build the model, train with
SGD/Adam and a schedule, evaluate on the test set after every epoch, write a record of what
was measured. ``train`` reads top to bottom on one screen; each step is its own function.
Console output comes from the ``console`` plugin through the lifecycle hooks.
"""

from __future__ import annotations

import io
import random
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from . import provenance
from .files import write_exclusive
from .plan import RunPlan
from .records import LoaderRequest, resolve
from .registry import build_model
from .runrecord import EpochStats, RunInfo, RunRecord, new_run_id, write_record


def train(plan: RunPlan, seed: int, hooks: Any) -> tuple[RunRecord, Path]:
    """Train ``plan`` with ``seed``; returns the run record and the path it was written to."""
    device = torch.device(plan.device)
    if plan.threads:
        torch.set_num_threads(plan.threads)
    git = provenance.git_commit()  # before training: the tree may change while a long run goes on
    seed_everything(seed)
    splits = load_splits(plan)
    train_batches = make_loader(plan, splits, "train", seed, device)
    test_batches = make_loader(plan, splits, "test", seed, device)
    model = build_model(plan.model, plan.normalizer, plan.recipe.dropout).to(device)
    optimizer, scheduler = make_optimizer(model, plan, len(train_batches))
    run = run_info(plan, seed, model)
    hooks.cnnbench_run_start(run=run)

    epochs: list[EpochStats] = []
    stopped_by, started, total = None, time.perf_counter(), plan.recipe.epochs
    for epoch in range(1, total + 1):
        t0, lr = time.perf_counter(), optimizer.param_groups[0]["lr"]
        batches = hooks.cnnbench_epoch_batches(
            run=run, epoch=epoch, epochs=total, batches=train_batches, progress=plan.progress
        )
        train_loss, train_acc, seen = fit_epoch(model, batches or train_batches, optimizer, scheduler, plan)
        train_seconds = time.perf_counter() - t0
        if scheduler is not None and plan.recipe.scheduler != "onecycle":
            scheduler.step()
        test_loss, test_acc, confusion = evaluate(model, test_batches, plan.dataset.num_classes, plan.precision)
        stats = EpochStats(
            epoch=epoch, train_loss=train_loss, train_acc=train_acc, test_loss=test_loss, test_acc=test_acc, lr=lr,
            seconds=round(time.perf_counter() - t0, 3), images_per_s=round(seen / train_seconds, 1),
        )
        epochs.append(stats)
        if any(hooks.cnnbench_epoch_end(run=run, epoch=stats)):
            stopped_by = f"a cnnbench_epoch_end hook after epoch {epoch}"
            break

    elapsed = time.perf_counter() - started
    record = build_record(plan, run, epochs, confusion, splits, elapsed, stopped_by, git)
    if plan.save_weights:
        record.weights = save_weights(model, plan.results_dir, run.run_id)
    hooks.cnnbench_run_end(run=run, record=record)
    path = write_record(record, plan.results_dir)
    hooks.cnnbench_record_written(record=record, path=path)
    return record, path


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def load_splits(plan: RunPlan) -> dict[str, tuple[Any, Any]]:
    """Both splits in memory, cut to ``--limit-train`` / ``--limit-test`` when given."""
    load = resolve(plan.dataset.load)
    splits = {}
    for split, limit in (("train", plan.limit_train), ("test", plan.limit_test)):
        images, labels = load(plan.data_dir, split)
        splits[split] = (images[:limit], labels[:limit]) if limit else (images, labels)
    return splits


def make_loader(plan: RunPlan, splits: dict[str, Any], split: str, seed: int, device: torch.device) -> Any:
    images, labels = splits[split]
    augment = split == "train" and plan.augmentation.name != "none"
    request = LoaderRequest(
        dataset=plan.dataset, split=split, images=images, labels=labels, batch_size=plan.recipe.batch_size,
        shuffle=split == "train", seed=seed, device=device, augmentation=plan.augmentation if augment else None,
        data_dir=str(plan.data_dir), options=dict(plan.loader_options),
    )
    return resolve(plan.loader.factory)(request)


def make_optimizer(model: torch.nn.Module, plan: RunPlan, steps_per_epoch: int) -> tuple[Any, Any]:
    recipe = plan.recipe
    if recipe.optimizer == "sgd":
        opt = torch.optim.SGD(
            model.parameters(), lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay
        )
    else:
        opt = torch.optim.Adam(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    if recipe.scheduler == "step":
        return opt, torch.optim.lr_scheduler.StepLR(opt, step_size=recipe.step_size, gamma=recipe.gamma)
    if recipe.scheduler == "onecycle":
        return opt, torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=recipe.lr, epochs=recipe.epochs, steps_per_epoch=steps_per_epoch
        )
    return opt, None


def autocast(device: torch.device, precision: str) -> Any:
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return torch.autocast(device.type, enabled=False)


def fit_epoch(model: torch.nn.Module, batches: Any, optimizer: Any, scheduler: Any, plan: RunPlan) -> tuple:
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
        with autocast(device, plan.precision):
            out = model(x)
            loss = F.nll_loss(out.float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if per_batch_schedule:
            scheduler.step()
        seen += len(y)
        loss_sum += loss.detach() * len(y)
        correct += (out.argmax(1) == y).sum()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return loss_sum.item() / seen, correct.item() / seen, seen


def evaluate(model: torch.nn.Module, batches: Any, num_classes: int, precision: str) -> tuple[float, float, Any]:
    """Mean loss, accuracy and the confusion matrix (rows: true class) over ``batches``."""
    model.eval()
    loss_sum, counts, device = None, None, next(model.parameters()).device
    with torch.no_grad():
        for x, y in batches:
            with autocast(device, precision):
                out = model(x)
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
    elapsed: float, stopped_by: str | None, git: dict[str, Any],
) -> RunRecord:
    """The run record: what was run, what every epoch measured, and where (machine, versions, commit)."""
    best = max(epochs, key=lambda e: e.test_acc)
    per_class = (confusion.diag().float() / confusion.sum(1).clamp(min=1)).tolist()
    names = plan.dataset.class_names or tuple(str(i) for i in range(plan.dataset.num_classes))
    return RunRecord(
        **asdict(run), created=run.run_id.split("-", 1)[0], command=provenance.command_line(),
        source=plan.model.source, epochs=epochs, epochs_run=len(epochs), final_test_acc=epochs[-1].test_acc,
        best_test_acc=best.test_acc, best_epoch=best.epoch, per_class_acc=dict(zip(names, per_class, strict=False)),
        confusion=confusion.tolist(), train_images=len(splits["train"][1]), test_images=len(splits["test"][1]),
        total_seconds=round(elapsed, 2), images_per_s=round(float(np.median([e.images_per_s for e in epochs])), 1),
        stopped_by=stopped_by, threads=torch.get_num_threads(), machine=provenance.machine(torch.device(plan.device)),
        versions=provenance.library_versions(), git=git, plugins=plan.plugins,
    )


def save_weights(model: torch.nn.Module, results_dir: Path, run_id: str) -> str:
    """Write the model's state dict as ``<run_id>.pt`` (atomic, never overwriting); returns the file name."""
    buffer = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, buffer)
    path = Path(results_dir) / f"{run_id}.pt"
    write_exclusive(path, buffer.getvalue())
    return path.name
