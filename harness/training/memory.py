"""Whether K fused seeds fit in memory, decided before anything is built.

``bench run --seeds K --fused`` holds K of everything a lone run holds once: the weights (each
seed's own model and its slice of the stacked copy), their gradients and optimizer state, the
activations of K batches kept for the backward pass, and on a GPU K copies of the data (each
seed's loader moves its splits there). Past what the machine has, the kernel kills the process
(or CUDA raises) after the data is loaded and the models are built; ``check_fused_memory``
refuses such a K in one line instead, with its estimate and the largest K that fits.

The activations are measured, not guessed: one fused training forward pass (``vmap`` over
``PROBE_SEEDS`` stacked copies, as ``cnnbench.training.fused`` runs them) of a CPU batch of
``PROBE_BATCH`` images records the bytes autograd keeps for the backward pass; the step's peak is
taken as ``BACKWARD_FACTOR`` times that. Measured on 2 CPU cores (peak RSS per added seed): 1.0x
the kept bytes for mnist_gap, 1.9x for cifar_fast (2.1x for a lone cifar_fast), so the estimate
errs high for the small MNIST models and is close for the CIFAR ones. Imported by the training
loop only (torch is imported here), never by ``bench --help``.
"""

from __future__ import annotations

import copy
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.func import functional_call, stack_module_state, vmap

from cnnbench.errors import UsageError
from cnnbench.registry import build_model
from cnnbench.training.plan import RunPlan

PROBE_SEEDS, PROBE_BATCH = 2, 2  # the measuring pass: batch norm needs more than one image
BACKWARD_FACTOR = 2  # the step's peak over what the forward pass keeps (gradients of activations, vmap's copies)
LOAD_COPIES = 3  # a split being loaded is held as file bytes, decoded array and tensor at once
INT64 = 8  # bytes of a label
CGROUP = Path("/sys/fs/cgroup")


@dataclass(frozen=True)
class FusedMemory:
    """Bytes a fused run of ``plan`` needs: ``fixed`` once, ``per_seed`` for every seed."""

    fixed: int
    per_seed: int

    def need(self, seeds: int) -> int:
        return self.fixed + seeds * self.per_seed

    def most_seeds(self, available: int) -> int:
        return max(0, (available - self.fixed) // self.per_seed)


def check_fused_memory(plan: RunPlan, seeds: int, available: int | None = None) -> None:
    """Refuse ``seeds`` fused seeds of ``plan`` when their estimate exceeds the memory available on the
    run's device (``available``: the bytes to assume, for tests)."""
    estimate = estimate_fused(plan)
    cuda = torch.device(plan.device).type == "cuda"
    free = available if available is not None else available_memory(plan.device)
    if estimate.need(seeds) <= free:
        return
    fit = estimate.most_seeds(free)
    advice = f"at most {fit} seeds fit; run the others in another command" if fit >= 2 else \
        "not even 2 seeds fit; run the seeds one after another (without --fused)"
    raise UsageError(
        f"--fused: {seeds} seeds of {plan.model.name} need about {size_text(estimate.need(seeds))} of "
        f"{'GPU' if cuda else 'main'} memory ({size_text(estimate.per_seed)} per seed at batch "
        f"{plan.recipe.batch_size}), but {size_text(free)} is available; {advice}"
    )


def estimate_fused(plan: RunPlan) -> FusedMemory:
    """Per seed: weights, gradients, optimizer state, the activations of one batch and (on a GPU, where
    every seed's loader copies its splits) the data. Once: the full splits in main memory, as loaded."""
    model = build_model(plan.model, plan.normalizer, plan.recipe.dropout)
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    buffers = sum(b.numel() * b.element_size() for b in model.buffers())
    # the seed's own model, its slice of the stacked copy, the gradient, the optimizer state; buffers twice
    weights = params * (3 + optimizer_states(plan)) + 2 * buffers
    activations = plan.recipe.batch_size * activation_bytes(model, plan.dataset.image_shape)
    if torch.device(plan.device).type == "cuda":
        return FusedMemory(fixed=0, per_seed=weights + activations + data_bytes(plan, limited=True))
    return FusedMemory(fixed=LOAD_COPIES * data_bytes(plan, limited=False), per_seed=weights + activations)


def optimizer_states(plan: RunPlan) -> int:
    """Tensors of the parameters' size the optimizer keeps: Adam's two moments, SGD's momentum (if any)."""
    if plan.recipe.optimizer == "adam":
        return 2
    return 1 if plan.recipe.momentum > 0 else 0


def activation_bytes(model: torch.nn.Module, image_shape: tuple[int, ...]) -> int:
    """Bytes per image and seed a fused training step holds at its peak: ``BACKWARD_FACTOR`` times what
    its forward pass keeps for the backward pass (measured), the output, and the input batch twice
    (the loader's and the stacked one)."""
    model.train()
    params, buffers = stack_module_state([model, *(copy.deepcopy(model) for _ in range(PROBE_SEEDS - 1))])
    base = copy.deepcopy(model).to("meta")
    own = {t.untyped_storage().data_ptr() for t in (*params.values(), *buffers.values())}
    kept: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in own:
            kept[storage.data_ptr()] = storage.nbytes()
        return tensor

    def one(p: dict[str, torch.Tensor], b: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        return functional_call(base, (p, b), (x,))

    x = torch.zeros(PROBE_SEEDS, PROBE_BATCH, *image_shape)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        out = vmap(one, randomness="different")(params, buffers, x)
    total = BACKWARD_FACTOR * sum(kept.values()) + out.nbytes + 2 * x.nbytes
    return math.ceil(total / (PROBE_SEEDS * PROBE_BATCH))


def data_bytes(plan: RunPlan, limited: bool) -> int:
    """The images (uint8) and labels (int64) of both splits: as the run trains on them (``--limit-*``),
    or whole, as they are loaded (a dataset that states no size counts as empty)."""
    image = math.prod(plan.dataset.image_shape)
    splits = ((plan.limit_train, plan.dataset.train_size), (plan.limit_test, plan.dataset.test_size))
    sizes = [min(n for n in (limit, size) if n) if limited and (limit or size) else size for limit, size in splits]
    return sum(sizes) * (image + INT64)


def available_memory(device: str) -> int:
    """Free bytes on ``device``: the GPU's free memory, or main memory the kernel can give this process
    (``MemAvailable``, lowered by a cgroup's limit when the process runs in one)."""
    if torch.device(device).type == "cuda":
        return torch.cuda.mem_get_info(torch.device(device))[0]
    return min(mem_available(), cgroup_room())


def mem_available() -> int:
    """``MemAvailable`` of ``/proc/meminfo``, else the free pages ``sysconf`` reports."""
    try:
        match = re.search(r"^MemAvailable:\s+(\d+) kB", Path("/proc/meminfo").read_text(), re.M)
    except OSError:
        match = None
    if match:
        return int(match.group(1)) * 1024
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


NO_LIMIT = 2**62  # cgroup v1 writes "no limit" as a number near 2**63


def cgroup_room() -> int:
    """What this process's memory cgroup still allows (v2 or v1), or ``NO_LIMIT`` outside one."""
    for limit_file, usage_file in cgroup_files():
        try:
            limit, used = limit_file.read_text().strip(), int(usage_file.read_text())
        except (OSError, ValueError):
            continue
        return NO_LIMIT if limit == "max" or int(limit) >= NO_LIMIT else max(0, int(limit) - used)
    return NO_LIMIT


def cgroup_files() -> list[tuple[Path, Path]]:
    """(limit, usage) files of this process's memory cgroup: its own folder first, then the mount's root
    (a container sees its cgroup at the root while /proc/self/cgroup names the host's path)."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        lines = []
    v2 = next((ln.split(":", 2)[2] for ln in lines if ln.startswith("0::")), "/")
    v1 = next((ln.split(":", 2)[2] for ln in lines if ":memory:" in ln), "/")
    folders = [(CGROUP / v2.lstrip("/"), "memory.max", "memory.current"), (CGROUP, "memory.max", "memory.current"),
               (CGROUP / "memory" / v1.lstrip("/"), "memory.limit_in_bytes", "memory.usage_in_bytes"),
               (CGROUP / "memory", "memory.limit_in_bytes", "memory.usage_in_bytes")]
    return [(folder / limit, folder / usage) for folder, limit, usage in folders]


def size_text(n: int) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"
