"""The training loop: one model, one recipe, one seed -> one run record.

Deliberately plain (airbench-style): load the data into memory, build the model with
the chosen normalizer, train with SGD/Adam and a schedule, evaluate on the test set
after every epoch, and write a record with everything that was measured.
"""

from __future__ import annotations

import dataclasses
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F
from tqdm.auto import tqdm

from . import provenance
from .errors import BenchError
from .records import LoaderRequest, ModelSpec, Recipe, resolve
from .registry import Registry
from .runrecord import SCHEMA_VERSION, new_run_id, write_exclusive, write_record


@dataclass
class RunConfig:
    """Everything that defines a run; ``recipe`` already has the CLI overrides applied."""

    model: str
    recipe: Recipe
    seed: int = 0
    normalizer: str | None = None  # None: the model's own
    loader: str = "memory"
    device: str = "auto"
    precision: str = "fp32"  # fp32 | bf16
    data_dir: str | None = None
    results_dir: str = "results"
    threads: int | None = None
    loader_options: dict[str, Any] = field(default_factory=dict)
    limit_train: int | None = None  # first N training images only (tests, smoke runs)
    limit_test: int | None = None
    save_weights: bool = True
    progress: bool = True


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise BenchError(f"--device {name}: CUDA is not available on this machine (use cpu or auto)")
    try:
        return torch.device(name)
    except RuntimeError as exc:
        raise BenchError(f"--device {name!r} is not a device torch knows ({exc})") from exc


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def make_optimizer(model: torch.nn.Module, recipe: Recipe, steps_per_epoch: int) -> tuple[Any, Any]:
    if recipe.optimizer == "sgd":
        opt = torch.optim.SGD(
            model.parameters(), lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay
        )
    elif recipe.optimizer == "adam":
        opt = torch.optim.Adam(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    else:
        raise BenchError(f"unknown optimizer {recipe.optimizer!r}; valid optimizers: adam, sgd")
    if recipe.scheduler == "none":
        sched = None
    elif recipe.scheduler == "step":
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=recipe.step_size, gamma=recipe.gamma)
    elif recipe.scheduler == "onecycle":
        sched = torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=recipe.lr, epochs=recipe.epochs, steps_per_epoch=steps_per_epoch
        )
    else:
        raise BenchError(f"unknown scheduler {recipe.scheduler!r}; valid schedulers: none, onecycle, step")
    return opt, sched


def autocast(device: torch.device, precision: str) -> Any:
    if precision == "fp32":
        return torch.autocast(device.type, enabled=False)
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    raise BenchError(f"unknown precision {precision!r}; valid precisions: bf16, fp32")


def evaluate(
    model: torch.nn.Module, batches: Any, num_classes: int, amp: Callable[[], Any]
) -> tuple[float, float, Any]:
    """Mean loss, accuracy and the confusion matrix (rows: true class) over ``batches``."""
    model.eval()
    loss_sum, counts = None, None
    with torch.no_grad():
        for x, y in batches:
            with amp():
                out = model(x)
            loss = F.nll_loss(out.float(), y, reduction="sum").double()
            batch_counts = torch.bincount(y * num_classes + out.argmax(1), minlength=num_classes**2)
            loss_sum = loss if loss_sum is None else loss_sum + loss
            counts = batch_counts if counts is None else counts + batch_counts
    confusion = counts.cpu().view(num_classes, num_classes)  # one host sync for the whole pass
    n = int(confusion.sum())
    return float(loss_sum) / n, float(confusion.diag().sum()) / n, confusion


def train(config: RunConfig, registry: Registry, hook_caller: Any | None = None) -> tuple[dict[str, Any], Path]:
    """Run one training job; returns the run record and the path it was written to."""
    spec: ModelSpec = registry.model(config.model)
    dataset = registry.dataset(spec.dataset)
    normalizer = config.normalizer or spec.normalizer
    recipe = config.recipe
    augmentation = registry.augmentation(recipe.augmentation)
    if augmentation.datasets and dataset.name not in augmentation.datasets:
        raise BenchError(
            f"augmentation {augmentation.name!r} is for {', '.join(augmentation.datasets)}, not {dataset.name}"
        )
    loader_spec = registry.loader(config.loader)
    device = pick_device(config.device)
    if config.threads:
        torch.set_num_threads(config.threads)
    hooks = hook_caller or registry.pm.hook
    git = provenance.git_commit()  # before training: the tree may change while a long run goes on
    seed_everything(config.seed)

    splits = {s: resolve(dataset.load)(config.data_dir, s) for s in ("train", "test")}
    for split, limit in (("train", config.limit_train), ("test", config.limit_test)):
        if limit:
            images, labels = splits[split]
            splits[split] = (images[:limit], labels[:limit])

    def make_loader(split: str, train_mode: bool) -> Any:
        images, labels = splits[split]
        request = LoaderRequest(
            dataset=dataset,
            split=split,
            images=images,
            labels=labels,
            batch_size=recipe.batch_size,
            shuffle=train_mode,
            seed=config.seed,
            device=device,
            augmentation=augmentation if train_mode and augmentation.name != "none" else None,
            data_dir=str(config.data_dir or ""),
            options=dict(config.loader_options),
        )
        return resolve(loader_spec.factory)(request)

    train_batches, test_batches = make_loader("train", True), make_loader("test", False)
    model = registry.create_model(spec.name, normalizer, recipe.dropout).to(device)
    params = sum(p.numel() for p in model.parameters())
    optimizer, scheduler = make_optimizer(model, recipe, len(train_batches))
    per_batch_schedule = recipe.scheduler == "onecycle"
    amp = lambda: autocast(device, config.precision)  # noqa: E731

    run_id = new_run_id(spec.name, config.seed)
    run = {
        "run_id": run_id,
        "model": spec.name,
        "dataset": dataset.name,
        "normalizer": normalizer,
        "augmentation": augmentation.name,
        "loader": loader_spec.name,
        "params": params,
        "recipe": dataclasses.asdict(recipe),
        "seed": config.seed,
        "device": str(device),
        "precision": config.precision,
    }
    hooks.cnnbench_run_start(run=run)
    epochs: list[dict[str, Any]] = []
    stopped_by, started = None, time.perf_counter()
    for epoch in range(1, recipe.epochs + 1):
        model.train()
        lr = optimizer.param_groups[0]["lr"]
        # running sums stay on the device: one host sync per epoch, not two per step
        seen, t0 = 0, time.perf_counter()
        correct = torch.zeros((), dtype=torch.int64, device=device)
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        bar = tqdm(
            train_batches, desc=f"epoch {epoch}/{recipe.epochs}", leave=False, disable=None if config.progress else True
        )
        for x, y in bar:
            with amp():
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
        train_seconds = time.perf_counter() - t0
        if scheduler is not None and not per_batch_schedule:
            scheduler.step()
        test_loss, test_acc, confusion = evaluate(model, test_batches, dataset.num_classes, amp)
        stats = {
            "epoch": epoch,
            "train_loss": loss_sum.item() / seen,
            "train_acc": correct.item() / seen,
            "test_loss": test_loss,
            "test_acc": test_acc,
            "lr": lr,
            "seconds": round(time.perf_counter() - t0, 3),
            "images_per_s": round(seen / train_seconds, 1),
        }
        epochs.append(stats)
        tqdm.write(
            f"epoch {epoch:>3}  loss {stats['train_loss']:.4f}  train {stats['train_acc']:.2%}  "
            f"test {test_acc:.2%}  lr {lr:.4g}  {stats['seconds']:.1f}s  {stats['images_per_s']:,.0f} img/s"
        )
        if any(hooks.cnnbench_epoch_end(run=run, epoch=stats)):
            stopped_by = f"a cnnbench_epoch_end hook after epoch {epoch}"
            break

    best = max(epochs, key=lambda e: e["test_acc"])
    per_class = (confusion.diag().float() / confusion.sum(1).clamp(min=1)).tolist()
    names = dataset.class_names or tuple(str(i) for i in range(dataset.num_classes))
    record = {
        "schema_version": SCHEMA_VERSION,
        **run,
        "created": run_id.split("-", 1)[0],
        "command": provenance.command_line(),
        "source": spec.source,
        "epochs": epochs,
        "epochs_run": len(epochs),
        "final_test_acc": epochs[-1]["test_acc"],
        "best_test_acc": best["test_acc"],
        "best_epoch": best["epoch"],
        "per_class_acc": dict(zip(names, per_class, strict=False)),
        "confusion": confusion.tolist(),
        "train_images": len(splits["train"][1]),
        "test_images": len(splits["test"][1]),
        "total_seconds": round(time.perf_counter() - started, 2),
        "images_per_s": round(float(np.median([e["images_per_s"] for e in epochs])), 1),
        "stopped_by": stopped_by,
        "threads": torch.get_num_threads(),
        "machine": provenance.machine(device),
        "versions": provenance.library_versions(),
        "git": git,
        "weights": None,
    }
    results_dir = Path(config.results_dir)
    if config.save_weights:
        weights = results_dir / f"{run_id}.pt"
        with_tmp = results_dir / f".{run_id}.pt.tmp"
        results_dir.mkdir(parents=True, exist_ok=True)
        torch.save({k: v.cpu() for k, v in model.state_dict().items()}, with_tmp)
        write_exclusive(weights, with_tmp.read_bytes())
        os.unlink(with_tmp)
        record["weights"] = weights.name
    hooks.cnnbench_run_end(run=run, record=record)
    return record, write_record(record, results_dir)
