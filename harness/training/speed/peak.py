"""The machine's limit: the rates a model's step is measured against.

Two figures per device and thread count:

- the **matrix-product peak**: the best GFLOP/s of a large square matrix product (2048³ on a
  CPU, 8192³ on a GPU) in fp32 and in bf16, the most arithmetic per second the device does for
  work that is nothing but multiply-adds; a step's achieved GFLOP/s is reported as a fraction of it;
- the **copy bandwidth**: the best GB/s of copying a tensor much larger than the caches (bytes
  read + bytes written), the other side of the roofline: a step that moves many bytes per FLOP
  is bound by this, not by arithmetic.

Measuring takes a few seconds, so the figures are cached per machine in ``peaks.json`` in the
cache folder (``$BENCH_CACHE_DIR``, else ``$XDG_CACHE_HOME/cnnbench``, else ``~/.cache/cnnbench``),
keyed by device, CPU or GPU model, thread count and torch version. A cache file that cannot be
read is measured again and replaced (atomically), never an error.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from cnnbench.files import write_atomic
from cnnbench.training import provenance
from cnnbench.training.speed.timing import sync

if TYPE_CHECKING:
    import torch

PeakDtype = Literal["fp32", "bf16"]
CACHE_FILE = "peaks.json"
CPU_SIZE, GPU_SIZE = 2048, 8192  # matrix side: large enough for the library's best kernel, a second or so
COPY_BYTES = 256 * 2**20  # copy source size: far beyond any CPU's last-level cache
REPEATS, WINDOWS = 4, 5  # matrix products per window; windows, the best one counts


@dataclass(frozen=True)
class MachinePeak:
    """What the device can do at this thread count (GFLOP/s of a matrix product, GB/s of a copy)."""

    key: str
    fp32_gflops: float
    bf16_gflops: float | None  # None where bf16 matrix products are not supported
    copy_gb_per_s: float
    matrix_size: int
    measured: str
    seconds: float  # how long measuring took

    def gflops(self, precision: str) -> float:
        """The peak a step in ``precision`` is measured against (bf16 autocast: the bf16 peak, if any)."""
        if precision == "bf16" and self.bf16_gflops:
            return self.bf16_gflops
        return self.fp32_gflops


def cache_dir() -> Path:
    if folder := os.environ.get("BENCH_CACHE_DIR"):
        return Path(folder)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "cnnbench"


def machine_key(device: torch.device, threads: int) -> str:
    """Device, CPU or GPU model, threads and torch version: what a peak depends on."""
    import torch  # lazy: torch

    where = provenance.machine(device).get("gpu") if device.type == "cuda" else provenance.cpu_name()
    return f"{device.type}|{where}|{threads} threads|torch {torch.__version__}"


def machine_peak(device: torch.device, threads: int, refresh: bool = False, folder: Path | None = None,
                 size: int | None = None) -> tuple[MachinePeak, Path, bool]:
    """The cached peak of this machine (measured now if absent, unreadable or ``refresh``), the cache
    file, and whether it was measured now."""
    path = (folder or cache_dir()) / CACHE_FILE
    key = machine_key(device, threads)
    cached = read_cache(path)
    if not refresh and isinstance(entry := cached.get(key), dict):
        try:
            return MachinePeak(**entry), path, False
        except TypeError:
            pass  # written by another version: measure again
    peak = measure_peak(device, key, size)
    cached[key] = asdict(peak)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, json.dumps(cached, indent=1, sort_keys=True) + "\n")
    except OSError:
        pass  # an unwritable cache only costs the next call a new measurement
    return peak, path, True


def read_cache(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def measure_peak(device: torch.device, key: str, size: int | None = None) -> MachinePeak:
    import torch  # lazy: torch

    started = time.perf_counter()
    size = size or (GPU_SIZE if device.type == "cuda" else CPU_SIZE)
    fp32 = matmul_gflops(device, torch.float32, size)
    try:
        bf16: float | None = matmul_gflops(device, torch.bfloat16, size)
    except RuntimeError:
        bf16 = None
    return MachinePeak(
        key=key, fp32_gflops=fp32, bf16_gflops=bf16, copy_gb_per_s=copy_gb_per_s(device), matrix_size=size,
        measured=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), seconds=time.perf_counter() - started,
    )


def matmul_gflops(device: torch.device, dtype: torch.dtype, size: int) -> float:
    """The best window's GFLOP/s of ``size``³ matrix products (2·size³ FLOPs each)."""
    import torch  # lazy: torch

    generator = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=generator).to(device, dtype)
    b = torch.randn(size, size, generator=generator).to(device, dtype)
    torch.mm(a, b)  # warm-up: library initialisation, kernel choice

    def products() -> None:
        for _ in range(REPEATS):
            torch.mm(a, b)  # each product freed before the next: no more memory than one

    best = best_seconds(device, products)
    return 2 * size**3 * REPEATS / best / 1e9


def copy_gb_per_s(device: torch.device, nbytes: int = COPY_BYTES) -> float:
    """The best of several copies of an ``nbytes`` float tensor into another: (read + write) / time."""
    import torch  # lazy: torch

    source = torch.ones(nbytes // 4, device=device)
    target = torch.empty_like(source)
    target.copy_(source)
    return 2 * nbytes / best_seconds(device, lambda: target.copy_(source)) / 1e9


def best_seconds(device: torch.device, work: Callable[[], object]) -> float:
    """The fastest of ``WINDOWS`` timed calls of ``work`` (the device waited for at both ends)."""

    def once() -> float:
        sync(device)
        start = time.perf_counter()
        work()
        sync(device)
        return time.perf_counter() - start

    return min(once() for _ in range(WINDOWS))
