"""The training loop: one plan, one seed -> one run record.

Deliberately plain (airbench-style): load the data into memory, build the model, train with
SGD/Adam and a schedule, evaluate on the test set after every epoch, write a record of what
was measured. ``train`` reads top to bottom on one screen; each step is its own function. The epoch
loop around the arithmetic (hooks, checkpoints, stopping, records) is ``epoch.train_runs``, shared with
fused training; this module's ``PlainComputation`` is the arithmetic for one model.
Console output comes from the ``console`` plugin through the lifecycle hooks.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any, Protocol, cast

import numpy as np
import torch
from torch.nn import functional as F

from cnnbench.choices import TTA, Precision
from cnnbench.errors import PluginError, UsageError
from cnnbench.records import LoaderRequest, resolve
from cnnbench.registry import SafeHooks, build_model
from cnnbench.runrecord import RunInfo, RunRecord, new_run_id
from cnnbench.training import provenance
from cnnbench.training.checkpoint import ema_state, on_cpu, restore
from cnnbench.training.ema import WeightEMA
from cnnbench.training.epoch import (
    Batch,
    Fit,
    Scheduler,
    Scores,
    SeedRun,
    Session,
    fit_pass,
    plugin_of,
    score_pass,
    train_runs,
)
from cnnbench.training.plan import RunPlan


def train(plan: RunPlan, seed: int, hooks: SafeHooks,
          resume: dict[str, Any] | None = None) -> tuple[RunRecord, Path]:
    """Train ``plan`` with ``seed`` (or continue the checked checkpoint ``resume``); returns the record and its path."""
    started, device = time.perf_counter(), torch.device(plan.device)
    if plan.threads:
        torch.set_num_threads(plan.threads)
    seed_everything(seed)
    splits = load_splits(plan)
    loaders = {split: make_loader(plan, splits, split, seed, device) for split in splits}
    model = build_checked_model(plan, device)
    configure_backends(plan)
    net, ema = prepare_model(model, plan), make_ema(model, plan)
    optimizer, scheduler = make_optimizer(model, plan, len(loaders["train"]))
    if resume:
        run = SeedRun.from_checkpoint(resume, 0, loaders)
        restore(resume, model, optimizer, scheduler, loaders, plan.device, ema)
    else:
        run = SeedRun(0, seed, run_info(plan, seed, model), loaders, provenance.git_commit())
    work = PlainComputation(plan, model, net, optimizer, scheduler, ema, loaders)
    [result] = train_runs(Session(plan, work, hooks, splits, started), [run])
    return result


class PlainComputation:
    """One model's epoch (``epoch.Computation`` with one slice): ``net`` trains (``model`` compiled and/or
    channels_last when asked, sharing its weights); the weight average is evaluated and saved when there is one."""

    def __init__(self, plan: RunPlan, model: torch.nn.Module, net: torch.nn.Module, optimizer: torch.optim.Optimizer,
                 scheduler: Scheduler | None, ema: WeightEMA | None, loaders: dict[str, Any]) -> None:
        self.plan, self.model, self.net, self.ema, self.loaders = plan, model, net, ema, loaders
        self.optimizer, self.scheduler = optimizer, scheduler
        self.eval_loaders = eval_loaders(loaders)
        self.judged = ema.module if ema is not None else model

    def training_batches(self) -> Iterable[Any]:
        return cast(Iterable[Any], self.loaders["train"])

    def fit(self, batches: Iterable[Batch]) -> Fit:
        return fit_epoch(self.net, batches, self.optimizer, self.scheduler, self.plan, self.ema)

    def evaluate(self, batches: Iterable[Batch]) -> list[Scores]:
        plan = self.plan
        return [evaluate(self.judged, batches, plan.dataset.num_classes, plan.precision, plan.recipe.tta)]

    def states(self, index: int) -> dict[str, Any]:
        return {"model": on_cpu(self.model.state_dict()), "optimizer": self.optimizer.state_dict(),
                "ema": ema_state(self.ema)}

    def final_model(self, index: int) -> torch.nn.Module:
        return self.judged


def eval_loaders(loaders: dict[str, Any]) -> dict[str, Any]:
    """The splits evaluated after every epoch, in order: the held-out slice (``--val-split``), then the test set."""
    return {split: loaders[split] for split in ("val", "test") if split in loaders}


def build_checked_model(plan: RunPlan, device: torch.device) -> torch.nn.Module:
    """The plan's model on ``device``, checked where the plugin's result enters the run, before any epoch:
    a ``torch.nn.Module`` with trainable parameters that maps a batch to ``[N, classes of the dataset]``."""
    model = build_model(plan.model, plan.normalizer, plan.recipe.dropout)
    who = model_label(plan)
    if not isinstance(model, torch.nn.Module):
        raise PluginError(f"{who}: its factory returned {type(model).__name__}, not a torch.nn.Module")
    model = model.to(device)
    if not any(p.requires_grad for p in model.parameters()):
        raise PluginError(f"{who} has no trainable parameters")
    check_output(model, plan, device, who)
    return model


def model_label(plan: RunPlan) -> str:
    """``model 'name' of plugin 'plugin'``: how an error about a plugin's model names it."""
    return f"model {plan.model.name!r} of plugin {plugin_of(plan, 'model')!r}"


def check_output(model: torch.nn.Module, plan: RunPlan, device: torch.device, who: str) -> None:
    """One forward of two blank images in eval mode: the output must be one row of class scores per image.
    The random generators are put back afterwards, so the check changes nothing a run draws."""
    classes, shape = plan.dataset.num_classes, plan.dataset.image_shape
    model.eval()
    with torch.no_grad(), torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        out = model(torch.zeros(2, *shape, device=device))
    model.train()
    if not isinstance(out, torch.Tensor) or not out.is_floating_point():
        raise PluginError(f"{who}: its output is {describe(out)}, not a float tensor of log-probabilities")
    if tuple(out.shape) != (2, classes):
        raise PluginError(f"{who}: its output for 2 images has shape {tuple(out.shape)}; dataset "
                          f"{plan.dataset.name!r} has {classes} classes, so it must be (2, {classes})")


def describe(value: Any) -> str:
    return f"a {value.dtype} tensor" if isinstance(value, torch.Tensor) else type(value).__name__


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


VAL_SHUFFLE_SEED = 2024  # one fixed held-out slice for every seed and run, so validation scores compare


def load_splits(plan: RunPlan) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
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
            raise UsageError(f"--val-split {plan.val_split} leaves no training images (there are {len(labels)})")
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


class Trainable(Protocol):
    """What an optimizer is built over: a module, or fused training's stack of K modules."""

    def parameters(self) -> Iterator[torch.Tensor]: ...


def make_optimizer(model: Trainable, plan: RunPlan,
                   steps_per_epoch: int) -> tuple[torch.optim.Optimizer, Scheduler | None]:
    """The recipe's optimizer over ``model``'s parameters, and its learning-rate schedule (or None)."""
    recipe = plan.recipe
    opt: torch.optim.Optimizer
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


def autocast(device: torch.device, precision: str) -> torch.autocast:
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
        return cast(torch.nn.Module, torch.compile(model, mode=None if plan.compile == "default" else plan.compile))
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


def train_step(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, optimizer: torch.optim.Optimizer,
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


def fit_epoch(model: torch.nn.Module, batches: Iterable[Batch], optimizer: torch.optim.Optimizer,
              scheduler: Scheduler | None, plan: RunPlan, ema: WeightEMA | None = None) -> Fit:
    """One pass over the training batches (``epoch.fit_pass`` with one slice), updating the average after every step."""
    model.train()

    def step(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, ...]:
        loss, out = train_step(model, x, y, optimizer, plan)
        if ema is not None:
            ema.update(model)
        return loss[None], out[None], y[None]

    return fit_pass(batches, step, scheduler, plan, slices=1)


def predict(model: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, tta: str = "none") -> torch.Tensor:
    """Log-probabilities for a batch; ``tta="flip"``: of the mean probability of each image and its mirror."""
    out = model(x)
    if tta == "flip":
        out = torch.logsumexp(torch.stack([out.float(), model(x.flip(-1)).float()]), 0) - math.log(2)
    return out


def evaluate(model: torch.nn.Module, batches: Iterable[Batch], num_classes: int, precision: Precision,
             tta: TTA = "none") -> Scores:
    """Mean loss, accuracy and the confusion matrix (rows: true class) over ``batches``.

    ``tta="flip"`` scores each image by the mean probability of it and its mirror image."""
    model.eval()
    device = next(model.parameters()).device

    def forward(x: torch.Tensor) -> torch.Tensor:
        with autocast(device, precision):
            return predict(model, x, tta)[None]

    with torch.no_grad():
        [scores] = score_pass(batches, forward, num_classes)
    return scores


def run_info(plan: RunPlan, seed: int, model: torch.nn.Module) -> RunInfo:
    return RunInfo(
        run_id=new_run_id(plan.model.name, seed), model=plan.model.name, dataset=plan.dataset.name,
        normalizer=plan.normalizer.name, augmentation=plan.augmentation.name, loader=plan.loader.name,
        params=sum(p.numel() for p in model.parameters()), recipe=asdict(plan.recipe), seed=seed,
        device=plan.device, precision=plan.precision,
    )
