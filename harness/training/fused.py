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

The loop around this arithmetic (hooks, checkpoints, stopping, records) is ``epoch.train_runs``, the
one plain runs use; ``FusedComputation`` is the part that differs. A seed that stops early (a hook, a
diverged loss) is written at once; its copy rides along in the batch, ignored, until the others finish.
After every epoch each seed gets the checkpoint ``train`` writes (its own weights, optimizer state in
the single-model format, loader states), plus ``fused``: its place among the run's seeds. A fused run
continues fused (``resume_fused``): the seeds whose checkpoints wait at the same epoch are stacked again
in their places, and a place without one (a seed that finished early) is filled by a stand-in slice
whose results are dropped, so every random stream (dropout masks are drawn for all K slices at once)
continues exactly where it was.

``check_fused`` refuses what this cannot do faithfully: one seed, loaders other than ``memory``,
per-sample augmentations (they draw from the global generators), ``--compile``, ``--channels-last``,
bf16 and ``--ema``. It also refuses a CPU that ``--device auto`` chose: there fusing does not pay.
One seed's batch already keeps the cores busy and a tiny network's step is bound by passes over
memory, which K seeds multiply by K: on 2 cores five mnist_fast seeds take 8.4x one seed's step
under vmap (0.6x the throughput of the seeds one after another), and the best construction measured,
one network with grouped convolutions in channels_last, 3.3x (tests/benchmarks/test_fused_cpu.py,
results/benchmarks/fused_cpu.json). ``--device cpu`` fuses anyway (the equality tests do). Fusing is
for GPUs, where one tiny network leaves the device mostly idle.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from torch.func import functional_call, vmap

from cnnbench.errors import PluginError, UsageError
from cnnbench.registry import SafeHooks
from cnnbench.runrecord import RunRecord
from cnnbench.training import epoch, provenance
from cnnbench.training import (
    train as T,  # looked up at call time: the fused loop uses the lone loop's loss, loaders, records
)
from cnnbench.training.checkpoint import fitting, on_cpu, restore_schedule, restore_seed
from cnnbench.training.memory import check_fused_memory
from cnnbench.training.plan import RunPlan

CPU_REFUSAL = (
    "is slower than separate runs on a CPU (5 mnist_fast seeds: 8.4x one seed's step time, 0.6x their "
    "throughput one after another): run the seeds plainly, or side by side with bench sweep --jobs 2; "
    "--device cpu fuses anyway"
)


def check_fused(plan: RunPlan, seeds: int, resuming: bool = False) -> None:
    """Refuse, in one line and before any data is read, what fused training cannot do (faithfully)."""
    aug = plan.augmentation
    problems = [
        (seeds < 2, "needs at least two seeds (--seeds 3, or --seeds 1,2,3)"),
        (plan.loader.name != "memory", f"trains from the memory loader only, not {plan.loader.name!r}"),
        (aug.kind != "batch", f"needs a batched augmentation; {aug.name!r} works per sample"),
        (plan.compile != "none", "does not combine with --compile"),
        (plan.channels_last, "does not combine with --channels-last"),
        # torch 2.x: autocast is not applied to ops under vmap on CPU (the convolutions stay fp32)
        (plan.precision != "fp32", f"trains in fp32 only, not {plan.precision} (autocast does not reach into vmap)"),
        (plan.recipe.ema is not None, "does not keep an average of the weights (--ema)"),
    ]
    # first, as the reason that matters most there; a run fused before this rule continues as it began
    problems.insert(0, (not resuming and plan.device == "cpu" and plan.overrides.device == "auto", CPU_REFUSAL))
    for refused, why in problems:
        if refused:
            raise UsageError(f"--fused {why}")
    check_fused_memory(plan, seeds)  # before anything is built: past it, the kernel kills the process


def train_fused(plan: RunPlan, seeds: list[int], hooks: SafeHooks) -> list[tuple[RunRecord, Path]]:
    """Train ``plan`` for all ``seeds`` as one batched computation; each seed's record and path."""
    check_fused(plan, len(seeds))
    started = time.perf_counter()
    launch = {**plan.launch, "fused_seeds": len(seeds)}  # in the overrides too: a resumed seed's record says it
    plan = dataclasses.replace(plan, launch=launch, overrides=dataclasses.replace(plan.overrides, launch=launch))
    splits, slices = set_up(plan, seeds)
    git = provenance.git_commit()
    runs = [epoch.SeedRun(k, seed, T.run_info(plan, seed, model), loaders, git) for k, (seed, (model, loaders))
            in enumerate(zip(seeds, slices, strict=True))]
    for r in runs:
        r.fused = {"index": r.index, "run_ids": [q.run.run_id for q in runs], "seeds": seeds}
    work = FusedComputation(plan, slices)
    return epoch.train_runs(epoch.Session(plan, work, hooks, splits, started), runs)


def resume_fused(plan: RunPlan, waiting: list[dict[str, Any]], hooks: SafeHooks) -> list[tuple[RunRecord, Path]]:
    """Continue a fused run from the checkpoints ``waiting`` (seeds of one fused run, after the same epoch),
    fused again: each in its own place; a place without a checkpoint gets a stand-in slice, trained
    along and ignored, so the shared random streams continue as in the uninterrupted run."""
    group = waiting[0]["fused"]
    check_fused(plan, len(group["seeds"]), resuming=True)
    started = time.perf_counter()
    splits, slices = set_up(plan, group["seeds"])
    states = {state["fused"]["index"]: state for state in waiting}
    runs = []
    for k, state in sorted(states.items()):
        model, loaders = slices[k]
        restore_seed(state, model, loaders)
        runs.append(epoch.SeedRun.from_checkpoint(state, k, loaders))
    work = FusedComputation(plan, slices)
    work.restore_optimizer(states)
    restore_schedule(waiting[0], work.scheduler, plan.device)
    return epoch.train_runs(epoch.Session(plan, work, hooks, splits, started), runs)


def set_up(plan: RunPlan, seeds: list[int]) -> tuple[dict[str, Any], list[tuple[torch.nn.Module, dict[str, Any]]]]:
    """The data, and each seed's model and loaders as ``train`` sets them up for a lone run."""
    device = torch.device(plan.device)
    if plan.threads:
        torch.set_num_threads(plan.threads)
    splits = T.load_splits(plan)
    slices = []
    for seed in seeds:
        T.seed_everything(seed)
        loaders = {split: T.make_loader(plan, splits, split, seed, device) for split in splits}
        slices.append((T.build_checked_model(plan, device), loaders))
    T.configure_backends(plan)
    return splits, slices


class FusedComputation:
    """K seeds' epoch as one stacked computation (``epoch.Computation`` with K slices)."""

    def __init__(self, plan: RunPlan, slices: list[tuple[torch.nn.Module, dict[str, Any]]]) -> None:
        self.plan, self.models = plan, [model for model, _ in slices]
        check_one_architecture(self.models, T.model_label(plan))
        self.stack = Stacked(self.models)
        self.train_loaders = [loaders["train"] for _, loaders in slices]
        self.eval_loaders = T.eval_loaders(slices[0][1])  # neither shuffled nor augmented: the same for every seed
        self.optimizer, self.scheduler = T.make_optimizer(self.stack, plan, len(self.train_loaders[0]))

    def training_batches(self) -> Iterable[Any]:
        return FusedBatches(self.train_loaders)

    def fit(self, batches: Iterable[epoch.Batch]) -> epoch.Fit:
        return fit_fused(self.stack, batches, self.optimizer, self.scheduler, self.plan)

    def evaluate(self, batches: Iterable[epoch.Batch]) -> list[epoch.Scores]:
        return evaluate_fused(self.stack, batches, self.plan)

    def states(self, index: int) -> dict[str, Any]:
        return {"model": on_cpu(self.final_model(index).state_dict()),
                "optimizer": seed_optimizer_state(self.optimizer, index), "ema": None}

    def final_model(self, index: int) -> torch.nn.Module:
        self.stack.copy_into(self.models[index], index)
        return self.models[index]

    def restore_optimizer(self, states: dict[int, dict[str, Any]]) -> None:
        """The stacked optimizer state from the seeds' own (``states`` by place; other places start at zero)."""
        first = next(iter(states.values()))
        with fitting(first):
            self.optimizer.load_state_dict(stacked_optimizer_state({k: s["optimizer"] for k, s in states.items()},
                                                                   self.stack.size))


def check_one_architecture(models: list[torch.nn.Module], who: str) -> None:
    """Every seed's network is its own object with the first one's parameter and buffer names and shapes."""
    if len({id(m) for m in models}) < len(models):
        raise PluginError(f"{who}: its factory returned one module object for several seeds; --fused needs a "
                          "network of its own for every seed")
    first = tensor_shapes(models[0])
    for call, model in enumerate(models[1:], start=2):
        other = tensor_shapes(model)
        if other != first:
            raise PluginError(f"{who}: its factory built a different network on call {call} than on call 1 "
                              f"({difference(first, other)}); --fused needs one architecture for every seed")


def tensor_shapes(model: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    named = [*model.named_parameters(), *model.named_buffers()]
    return {name: tuple(t.shape) for name, t in named}


def difference(first: Mapping[str, tuple[int, ...]], other: Mapping[str, tuple[int, ...]]) -> str:
    for name in first:
        if name not in other:
            return f"it lacks {name!r}"
        if first[name] != other[name]:
            return f"{name!r} has shape {other[name]}, not {first[name]}"
    return f"it has {next(name for name in other if name not in first)!r} besides"


class Stacked:
    """K models of one architecture as stacked tensors ``[K, ...]``, called as one batched model."""

    def __init__(self, models: list[torch.nn.Module]) -> None:
        # not torch.func.stack_module_state: it wants one class, and a factory may make a class per call
        params, buffers = [dict(m.named_parameters()) for m in models], [dict(m.named_buffers()) for m in models]
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


# Per-parameter optimizer state that counts steps (Adam's "step") rather than holding a value per weight: one
# for all seeds, as every seed takes every step. All else (momentum, moments) is stacked like the weights.
STEP_COUNTS = ("step",)


def per_weight(name: str, value: Any) -> bool:
    return torch.is_tensor(value) and name not in STEP_COUNTS


def seed_optimizer_state(optimizer: torch.optim.Optimizer, k: int) -> dict[str, Any]:
    """The fused optimizer's state as seed ``k``'s lone optimizer's ``state_dict()``."""
    full = optimizer.state_dict()
    state = {i: {name: value[k].clone() if per_weight(name, value) else value for name, value in entries.items()}
             for i, entries in full["state"].items()}
    return {"state": state, "param_groups": full["param_groups"]}


def stacked_optimizer_state(states: dict[int, dict[str, Any]], size: int) -> dict[str, Any]:
    """``seed_optimizer_state`` undone: the fused optimizer's state from the seeds' own, by place
    (a place without one, a stand-in, starts from zeros)."""
    first = next(iter(states.values()))

    def stacked(i: int, name: str, value: Any) -> Any:
        if not per_weight(name, value):
            return value
        return torch.stack([states[k]["state"][i][name] if k in states else torch.zeros_like(value)
                            for k in range(size)])

    state = {i: {name: stacked(i, name, value) for name, value in entries.items()}
             for i, entries in first["state"].items()}
    return {"state": state, "param_groups": first["param_groups"]}


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


def fit_fused(stack: Stacked, batches: Iterable[epoch.Batch], optimizer: torch.optim.Optimizer,
              scheduler: epoch.Scheduler | None, plan: RunPlan) -> epoch.Fit:
    """``train.fit_epoch`` for all slices at once: one step trains every slice on its own batch."""
    stack.train()

    def step(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = stack(x)  # fp32 only (check_fused)
        losses = torch.stack([T.batch_loss(out[k], y[k], plan) for k in range(stack.size)])
        optimizer.zero_grad(set_to_none=True)
        losses.sum().backward()  # each seed's parameters get the gradient of its own loss only
        optimizer.step()
        return losses, out, y

    return epoch.fit_pass(batches, step, scheduler, plan, stack.size)


def evaluate_fused(stack: Stacked, batches: Iterable[epoch.Batch], plan: RunPlan) -> list[epoch.Scores]:
    """``train.evaluate`` for every slice on the same batches."""
    stack.train(False)
    with torch.no_grad():
        return epoch.score_pass(batches, lambda x: T.predict(lambda v: stack(v, shared=True), x, plan.recipe.tta),
                          plan.dataset.num_classes)
