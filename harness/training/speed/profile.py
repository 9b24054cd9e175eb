"""What a training step spends its time on (``bench speed --profile``).

Two measurements of the same step the timing uses:

- **operators**: ``torch.profiler`` over a few steps; each operator's own time ("self": without
  the operators it calls), the top ones, and the share of the step in convolutions and matrix
  products (forward and backward) against everything else (norms, activations, pooling,
  the optimizer, the framework's own bookkeeping);
- **bytes moved**: every operator's input and output tensors added up over one step (views and
  reshapes move nothing and are left out), as if each operator read its inputs from memory and
  wrote its outputs back. That is the traffic of an unfused step; dividing it by the step time and
  by the machine's copy bandwidth says how close the step is to the memory side of the roofline.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

TOP = 8
# Operators whose own time is arithmetic on the matrix units: convolutions and matrix products.
ARITHMETIC = ("conv", "mm", "matmul", "linear", "gemm")
# Operators that only relabel memory: no bytes move.
VIEWS = frozenset({
    "view", "_unsafe_view", "reshape", "t", "transpose", "permute", "expand", "as_strided", "detach", "alias",
    "unsqueeze", "squeeze", "slice", "select", "unbind", "split", "chunk", "flatten", "lift_fresh", "_reshape_alias",
})


@dataclass(frozen=True)
class OperatorTime:
    name: str
    ms_per_step: float
    share: float  # of the profiled self time
    calls_per_step: float


@dataclass
class StepProfile:
    steps: int
    self_ms_per_step: float  # all operators' own time, per step
    arithmetic_share: float  # convolutions and matrix products
    top: list[OperatorTime] = field(default_factory=list)
    bytes_per_step: int = 0

    def gb_per_s(self, step_ms: float) -> float:
        return self.bytes_per_step / (step_ms / 1000) / 1e9


def is_arithmetic(name: str) -> bool:
    op = name.split("::")[-1].lower()
    return any(word in op for word in ARITHMETIC)


def profile_operators(step: Callable[[], object], device: torch.device, steps: int = 10, top: int = TOP) -> StepProfile:
    """Run ``step`` ``steps`` times under ``torch.profiler`` and rank the operators by own time."""
    import torch  # lazy: torch
    from torch.profiler import ProfilerActivity, profile  # lazy: torch

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for _ in range(steps):
            step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    rows = [(e.key, _self_us(e, device), e.count) for e in prof.key_averages()]
    rows = [r for r in rows if r[1] > 0 and not r[0].startswith(("ProfilerStep", "Optimizer.", "autograd::engine"))]
    total = sum(us for _, us, _ in rows) or 1.0
    rows.sort(key=lambda r: -r[1])
    return StepProfile(
        steps=steps, self_ms_per_step=total / 1000 / steps,
        arithmetic_share=sum(us for name, us, _ in rows if is_arithmetic(name)) / total,
        top=[OperatorTime(name, us / 1000 / steps, us / total, count / steps) for name, us, count in rows[:top]],
    )


def _self_us(event: Any, device: torch.device) -> float:
    if device.type == "cuda":
        return float(getattr(event, "self_device_time_total", 0.0))
    return float(event.self_cpu_time_total)


def bytes_moved(step: Callable[[], object]) -> int:
    """The bytes of every non-view operator's tensor inputs and outputs during one ``step()``."""
    import torch  # lazy: torch
    from torch.utils._python_dispatch import TorchDispatchMode  # lazy: torch
    from torch.utils._pytree import tree_leaves  # lazy: torch

    class Counter(TorchDispatchMode):
        total = 0

        def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
            out = func(*args, **(kwargs or {}))
            if func.overloadpacket.__name__.rstrip("_") not in VIEWS:
                Counter.total += sum(t.numel() * t.element_size() for t in tree_leaves((args, kwargs, out))
                                     if isinstance(t, torch.Tensor))
            return out

    with Counter():
        step()
    return Counter.total


def render_profile(model: str, profile: StepProfile, step_ms: float, copy_gb_per_s: float | None,
                   tablefmt: str = "simple") -> str:
    """The top operators of one model's step, and the arithmetic / bytes lines under them."""
    from tabulate import tabulate  # lazy: tabulate

    rows = [[op.name, f"{op.ms_per_step:.2f}", f"{100 * op.share:.1f}%", f"{op.calls_per_step:g}"]
            for op in profile.top]
    table = tabulate(rows, headers=["operator", "ms/step", "share", "calls/step"], tablefmt=tablefmt,
                     disable_numparse=True, colalign=("left", "right", "right", "right"))
    gbs = profile.gb_per_s(step_ms)
    bandwidth = f" = {100 * gbs / copy_gb_per_s:.0f}% of the copy bandwidth {copy_gb_per_s:.1f} GB/s" \
        if copy_gb_per_s else ""
    lines = [
        f"{model}: operators' own time {profile.self_ms_per_step:.2f} ms/step over {profile.steps} profiled steps; "
        f"convolutions and matrix products {100 * profile.arithmetic_share:.0f}%, "
        f"everything else {100 * (1 - profile.arithmetic_share):.0f}%",
        f"{model}: bytes moved by the unfused step {profile.bytes_per_step / 1e6:,.1f} MB/step, "
        f"{gbs:.1f} GB/s at {step_ms:.2f} ms/step{bandwidth}",
    ]
    return table + "\n" + "\n".join(lines) + "\n"
