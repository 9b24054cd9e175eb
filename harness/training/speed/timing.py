"""``bench speed``: the steady-state cost of one training step and one evaluation step.

No data is read: the batches are synthetic, made on the device in the dataset's image shape,
so what is timed is the model, the loss, the backward pass and the optimizer, nothing else.
The training step is ``cnnbench.training.train.train_step``, the function the harness's epoch loop
calls, on a model built, prepared (channels_last, ``torch.compile``) and given an optimizer by
the harness's own functions, so the two figures are of the same code.

Timing: the first steps (which include compilation or CUDA-graph capture) are timed apart as
warm-up; then ``windows`` windows of ``steps`` steps each are timed, with the host waiting for
the device only at the end of a window. Medians over the windows are reported, with the
slowest and fastest window. FLOPs come from PyTorch's ``FlopCounterMode`` on the uncompiled
model (convolutions and matrix products; norms, activations and pooling are not counted).

The module imports only the standard library at the top: ``harness_figure`` is used on run
records without torch.
"""

from __future__ import annotations

import ctypes
import gc
import math
import re
import resource
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cnnbench.registry import build_model
from cnnbench.runrecord import device_kind
from cnnbench.training import provenance
from cnnbench.training.speed.profile import bytes_moved, profile_operators

if TYPE_CHECKING:
    from collections.abc import Callable

    import torch
    from torch import nn

    from cnnbench.runrecord import RunRecord
    from cnnbench.training.plan import RunPlan
    from cnnbench.training.speed.peak import MachinePeak
    from cnnbench.training.speed.profile import StepProfile

    Batch = tuple[torch.Tensor, torch.Tensor]

DISTINCT_BATCHES = 4  # synthetic batches cycled through, so no step reuses the previous step's input
WINDOW_SECONDS = 0.5  # the automatic window length (--steps 0)
MAX_AUTO_STEPS = 1000


@dataclass(frozen=True)
class PhaseTiming:
    """One phase (training or evaluation) over its timed windows."""

    steps_per_window: int
    images_per_s: float  # median over windows
    images_per_s_min: float
    images_per_s_max: float
    step_ms: float  # median over windows
    step_ms_min: float
    step_ms_max: float
    warmup_s: float  # the warm-up steps together (compilation / capture happens here)
    first_step_s: float
    window_images_per_s: list[float] = field(default_factory=list)

    @classmethod
    def from_windows(cls, seconds: list[float], steps: int, batch_size: int, warmup_s: float,
                     first_step_s: float) -> PhaseTiming:
        rates = [steps * batch_size / s for s in seconds]
        step_ms = [1000 * s / steps for s in seconds]
        return cls(
            steps_per_window=steps, images_per_s=statistics.median(rates), images_per_s_min=min(rates),
            images_per_s_max=max(rates), step_ms=statistics.median(step_ms), step_ms_min=min(step_ms),
            step_ms_max=max(step_ms), warmup_s=warmup_s, first_step_s=first_step_s, window_images_per_s=rates,
        )


@dataclass(frozen=True)
class HarnessFigure:
    """The harness's measured training throughput for the same settings (from run records)."""

    images_per_s: float  # median of the matching records' images_per_s
    runs: int
    ratio: float  # harness / bench speed


@dataclass
class SpeedResult:
    """What ``measure_speed`` measured; ``to_json`` is ``bench speed --json``'s object."""

    model: str
    dataset: str
    params: int
    batch_size: int
    device: str
    precision: str
    channels_last: bool
    compile: str
    threads: int
    warmup_steps: int
    windows: int
    train: PhaseTiming
    eval: PhaseTiming
    flops_per_image_forward: float
    flops_per_image_train: float  # forward + backward (the optimizer's update is not counted)
    train_gflops_per_s: float  # achieved: train FLOPs/image x train img/s
    eval_gflops_per_s: float
    peak_memory_bytes: int | None
    peak_memory_kind: str  # cuda_max_allocated | rss_peak (since the measurement began) | process_peak_rss
    machine: dict[str, Any]
    torch_version: str
    created: str
    harness: HarnessFigure | None = None
    peak: MachinePeak | None = None  # the machine's limit (bench speed attaches it; --no-peak: None)
    profile: StepProfile | None = None  # --profile: the step's operators and bytes moved

    @property
    def peak_fraction(self) -> float | None:
        """Achieved training GFLOP/s over the matrix-product peak of this precision."""
        return self.train_gflops_per_s / self.peak.gflops(self.precision) if self.peak else None

    @property
    def device_kind(self) -> str:
        return self.device.split(":")[0]

    @property
    def compile_s(self) -> float:
        """Warm-up time beyond what the same steps take once warm: compilation or capture, mostly."""
        steady = (self.warmup_steps * (self.train.step_ms + self.eval.step_ms)) / 1000
        return max(0.0, self.train.warmup_s + self.eval.warmup_s - steady)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["compile_s"] = self.compile_s
        data["peak_fraction"] = self.peak_fraction
        if self.profile:
            data["profile"]["gb_per_s"] = self.profile.gb_per_s(self.train.step_ms)
        return data


def measure_speed(plan: RunPlan, warmup: int = 3, windows: int = 5, steps: int = 0, seed: int = 0,
                  window_seconds: float = WINDOW_SECONDS, profile: bool = False) -> SpeedResult:
    """Time ``train_step`` and the evaluation forward of ``plan``'s model on synthetic batches.

    ``steps`` per window; 0 picks a count that makes a window about ``window_seconds`` long
    (from one step timed after warm-up), separately for training and evaluation. ``profile``:
    afterwards, the training step's operators (``torch.profiler``) and the bytes its unfused
    operators move (on the uncompiled model)."""
    import torch  # lazy: torch

    from cnnbench.training.train import configure_backends, make_optimizer, prepare_model  # lazy: torch

    if warmup < 1 or windows < 1 or steps < 0:
        raise ValueError("warmup and windows must be at least 1, steps at least 0")
    device = torch.device(plan.device)
    threads_before = torch.get_num_threads()
    if plan.threads:
        torch.set_num_threads(plan.threads)
    try:
        if plan.compile != "none":
            import torch._dynamo  # lazy: torch

            torch._dynamo.reset()  # models share forward code: their graphs must not hit dynamo's recompile limit
        torch.manual_seed(seed)
        batch_size = plan.recipe.batch_size
        model = build_model(plan.model, plan.normalizer, plan.recipe.dropout).to(device)
        configure_backends(plan)
        net = prepare_model(model, plan)
        optimizer, _ = make_optimizer(model, plan, math.ceil(plan.dataset.train_size / batch_size))
        batches = synthetic_batches(plan, device, batch_size)
        forward_flops, train_flops = count_flops(model, batches[0], plan)
        memory = PeakMemory(device)
        train = time_phase(lambda i: train_once(net, batches[i % len(batches)], optimizer, plan), device,
                           warmup, windows, steps, batch_size, window_seconds, before=net.train)
        evaluation = time_phase(lambda i: eval_once(net, batches[i % len(batches)][0], plan), device,
                                warmup, windows, steps, batch_size, window_seconds, before=net.eval)
        peak, kind = memory.peak()
        step_profile = None
        if profile:
            net.train()
            step_profile = profile_operators(lambda: train_once(net, batches[0], optimizer, plan), device)
            step_profile.bytes_per_step = bytes_moved(lambda: train_once(model, batches[1], optimizer, plan))
        return SpeedResult(
            model=plan.model.name, dataset=plan.dataset.name, params=sum(p.numel() for p in model.parameters()),
            batch_size=batch_size, device=str(device), precision=plan.precision, channels_last=plan.channels_last,
            compile=plan.compile, threads=torch.get_num_threads(), warmup_steps=warmup, windows=windows,
            train=train, eval=evaluation, flops_per_image_forward=forward_flops / batch_size,
            flops_per_image_train=train_flops / batch_size,
            train_gflops_per_s=train_flops / batch_size * train.images_per_s / 1e9,
            eval_gflops_per_s=forward_flops / batch_size * evaluation.images_per_s / 1e9,
            peak_memory_bytes=peak, peak_memory_kind=kind, machine=provenance.machine(device),
            torch_version=torch.__version__, created=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            profile=step_profile,
        )
    finally:
        torch.set_num_threads(threads_before)


def synthetic_batches(plan: RunPlan, device: torch.device, batch_size: int) -> list[Batch]:
    """Normalized-looking float images (standard normal) and random labels, already on the device."""
    import torch  # lazy: torch

    generator = torch.Generator().manual_seed(1)
    shape = (batch_size, *plan.dataset.image_shape)
    return [
        (torch.randn(shape, generator=generator).to(device),
         torch.randint(0, plan.dataset.num_classes, (batch_size,), generator=generator).to(device))
        for _ in range(DISTINCT_BATCHES)
    ]


def count_flops(model: nn.Module, batch: Batch, plan: RunPlan) -> tuple[int, int]:
    """FLOPs of one batch: the forward pass, and forward + backward (the uncompiled model, fp32).

    The model's weights are not changed (no optimizer step; the gradients are dropped), only
    the norms' running statistics see one batch."""
    import torch  # lazy: torch
    from torch.nn import functional as F  # lazy: torch
    from torch.utils.flop_counter import FlopCounterMode  # lazy: torch

    x, y = batch
    if plan.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    model.eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    forward = counter.get_total_flops()
    model.train()
    with FlopCounterMode(display=False) as counter:
        F.nll_loss(model(x).float(), y).backward()
    model.zero_grad(set_to_none=True)
    return forward, counter.get_total_flops()


def train_once(net: nn.Module, batch: Batch, optimizer: torch.optim.Optimizer, plan: RunPlan) -> None:
    from cnnbench.training.train import train_step  # lazy: torch

    train_step(net, batch[0], batch[1], optimizer, plan)


def eval_once(net: nn.Module, x: torch.Tensor, plan: RunPlan) -> None:
    """The evaluation forward as ``cnnbench.training.train.evaluate`` runs it (no loss or confusion counts)."""
    import torch  # lazy: torch

    from cnnbench.training.train import autocast  # lazy: torch

    if plan.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad(), autocast(x.device, plan.precision):
        net(x)


def time_phase(step: Callable[[int], object], device: torch.device, warmup: int, windows: int, steps: int,
               batch_size: int, window_seconds: float, before: Callable[[], object]) -> PhaseTiming:
    """Warm-up steps, then ``windows`` timed windows of ``steps`` calls of ``step(i)``."""
    before()
    calls = 0

    def run(n: int) -> float:
        nonlocal calls
        sync(device)
        t0 = time.perf_counter()
        for _ in range(n):
            step(calls)
            calls += 1
        sync(device)
        return time.perf_counter() - t0

    first = run(1)
    warm = first + (run(warmup - 1) if warmup > 1 else 0.0)
    if steps == 0:
        steps = max(1, min(MAX_AUTO_STEPS, math.floor(window_seconds / max(run(1), 1e-9))))
    seconds = [run(steps) for _ in range(windows)]
    return PhaseTiming.from_windows(seconds, steps, batch_size, warm, first)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        import torch  # lazy: torch

        torch.cuda.synchronize(device)


class PeakMemory:
    """Peak memory from now on: CUDA's peak allocation on a GPU, else the peak resident set size.

    On Linux the RSS peak (``VmHWM``) is reset first (``/proc/self/clear_refs``), so it is this
    measurement's peak (the whole process's memory, libraries included); where that cannot be
    done it is the process's peak since it started (``ru_maxrss``)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.rss_reset = False
        if device.type == "cuda":
            import torch  # lazy: torch

            torch.cuda.reset_peak_memory_stats(device)
            return
        release_free_memory()
        try:
            Path("/proc/self/clear_refs").write_text("5")
            self.rss_reset = _vm_hwm() is not None
        except OSError:
            pass

    def peak(self) -> tuple[int | None, str]:
        if self.device.type == "cuda":
            import torch  # lazy: torch

            return int(torch.cuda.max_memory_allocated(self.device)), "cuda_max_allocated"
        if self.rss_reset and (hwm := _vm_hwm()) is not None:
            return hwm, "rss_peak"
        try:

            maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            return int(maxrss if sys.platform == "darwin" else maxrss * 1024), "process_peak_rss"
        except (ImportError, OSError):
            return None, "unknown"


def release_free_memory() -> None:
    """Collect garbage and hand freed heap pages back to the OS (glibc), so that an earlier
    model's freed memory does not count towards this one's resident set."""

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _vm_hwm() -> int | None:
    try:
        match = re.search(r"^VmHWM:\s+(\d+)\s+kB", Path("/proc/self/status").read_text(), re.M)
    except OSError:
        return None
    return int(match.group(1)) * 1024 if match else None


# --- the harness's figure for the same settings -----------------------------------------------


def record_setting(record: RunRecord, key: str, default: object) -> object:
    """A speed setting of a record (``fast_path``, else a field or extra key of that name); absent (older
    records) is ``default``."""
    value = record.fast_path.get(key)
    if value is None:
        value = getattr(record, key, None)
    if value is None:
        value = record.extra.get(key)
    if isinstance(value, dict):  # e.g. {"mode": "default", "seconds": 41.2}
        value = value.get("mode")
    return default if value is None else value


def matches(record: RunRecord, result: SpeedResult) -> bool:
    """Same model, batch size, device kind, precision, channels_last and compile mode, on the same
    hardware (CPU model and thread count, or GPU), one model at a time (not ``--fused`` seeds) and
    a device not shared with other cnnbench jobs."""

    if (record.model, record.recipe.get("batch_size"), device_kind(record), record.precision) != (
        result.model, result.batch_size, result.device_kind, result.precision
    ):
        return False
    if bool(record_setting(record, "channels_last", False)) != result.channels_last:
        return False
    if str(record_setting(record, "compile", "none")) != result.compile:
        return False
    for key in ("jobs_on_device", "fused_seeds"):
        count = record.launch.get(key)
        if isinstance(count, int) and count > 1:
            return False
    hardware = "gpu" if result.device_kind == "cuda" else "cpu"
    mine, theirs = result.machine.get(hardware), record.machine.get(hardware)
    if mine and theirs and mine != theirs:
        return False
    return not (hardware == "cpu" and record.threads and record.threads != result.threads)


def harness_figure(records: list[RunRecord], result: SpeedResult) -> HarnessFigure | None:
    """The median training img/s of the records that ``matches`` ``result``, and its ratio to bench speed's."""
    speeds = [float(r.images_per_s) for r in records if r.images_per_s and matches(r, result)]
    if not speeds:
        return None
    median = statistics.median(speeds)
    return HarnessFigure(images_per_s=median, runs=len(speeds), ratio=median / result.train.images_per_s)


# --- rendering ---------------------------------------------------------------------------------

HEADERS = [
    "model", "batch", "train img/s", "(min-max)", "train ms/step", "eval img/s", "eval ms/step", "fwd MFLOP/img",
    "train MFLOP/img", "train GFLOP/s", "% of peak", "peak mem", "warm-up s", "harness img/s (runs)", "harness / speed",
]


def table_row(r: SpeedResult) -> list[str]:
    h = r.harness
    return [
        r.model, str(r.batch_size), f"{r.train.images_per_s:,.0f}",
        f"{r.train.images_per_s_min:,.0f}-{r.train.images_per_s_max:,.0f}", f"{r.train.step_ms:.2f}",
        f"{r.eval.images_per_s:,.0f}", f"{r.eval.step_ms:.2f}", f"{r.flops_per_image_forward / 1e6:,.2f}",
        f"{r.flops_per_image_train / 1e6:,.2f}", f"{r.train_gflops_per_s:,.1f}",
        f"{100 * r.peak_fraction:.1f}%" if r.peak_fraction is not None else "-", memory_text(r.peak_memory_bytes),
        f"{r.train.warmup_s + r.eval.warmup_s:.2f}",
        f"{h.images_per_s:,.0f} ({h.runs})" if h else "-", f"{h.ratio:.2f}" if h else "-",
    ]


def memory_text(value: int | None) -> str:
    if value is None:
        return "-"
    return f"{value / 2**20:,.0f} MiB" if value >= 2**20 else f"{value / 2**10:,.0f} KiB"


MEMORY_KINDS = {
    "cuda_max_allocated": "CUDA peak allocation",
    "rss_peak": "peak resident set size of the process during the measurement (libraries included)",
    "process_peak_rss": "peak resident set size of the process since it started",
    "unknown": "not available",
}


def machine_text(r: SpeedResult) -> str:
    m = r.machine
    where = m.get("gpu") if r.device_kind == "cuda" else f"{m.get('cpu')}, {r.threads} threads"
    return f"{where} ({m.get('cpu_count')} cores, {m.get('hostname')}); torch {r.torch_version}"


def settings_text(r: SpeedResult) -> str:
    layout = ", channels_last" if r.channels_last else ""
    compiled = f", compile {r.compile}" if r.compile != "none" else ""
    return f"{r.device}, {r.precision}{layout}{compiled}"


def peak_notes(results: list[SpeedResult]) -> list[str]:
    """One line per distinct machine limit the table's "% of peak" column refers to."""
    lines = []
    for peak in sorted({r.peak for r in results if r.peak}, key=lambda p: p.key):
        bf16 = f", bf16 {peak.bf16_gflops:,.1f} (bf16 rows are measured against it)" if peak.bf16_gflops else ""
        lines.append(f"% of peak: train GFLOP/s over the matrix-product peak of {peak.key} "
                     f"({peak.matrix_size}x{peak.matrix_size} fp32 {peak.fp32_gflops:,.1f} GFLOP/s{bf16}; "
                     f"copy bandwidth {peak.copy_gb_per_s:,.1f} GB/s; measured {peak.measured}, cached)")
    return lines


def render(results: list[SpeedResult], tablefmt: str = "simple") -> str:
    """A table of ``results`` (tabulate's ``tablefmt``) and what its columns mean."""
    from tabulate import tabulate  # lazy: tabulate

    table = tabulate([table_row(r) for r in results], headers=HEADERS, tablefmt=tablefmt, disable_numparse=True,
                     colalign=("left", *["right"] * (len(HEADERS) - 1)))
    first = results[0]
    machines = sorted({machine_text(r) for r in results})
    settings = sorted({settings_text(r) for r in results})
    kinds = sorted({MEMORY_KINDS[r.peak_memory_kind] for r in results})
    steps = ", ".join(f"{r.model} {r.train.steps_per_window}/{r.eval.steps_per_window}" for r in results)
    notes = [
        f"machine: {'; '.join(machines)}",
        f"settings: {'; '.join(settings)}; synthetic batches (no data loading); {first.warmup_steps} warm-up steps, "
        f"median of {first.windows} windows (steps per window, train/eval: {steps})",
        "FLOPs: torch.utils.flop_counter (convolutions and matrix products), train = forward + backward; "
        f"peak mem: {'; '.join(kinds)}; warm-up s: the warm-up steps, train + eval (compilation happens there)",
        *peak_notes(results),
        "harness img/s: median training img/s of the run records with the same model, batch size, device, "
        "precision, channels_last, compile and hardware (not shared with other jobs, not fused seeds)",
    ]
    if tablefmt == "github":
        return table + "\n\n" + "\n".join(f"- {n}" for n in notes) + "\n"
    return table + "\n\n" + "\n".join(notes) + "\n"
