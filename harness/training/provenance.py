"""Where and with what a run happened: machine, library versions, git commit, the environment.

``environment`` is what a record stores to say whether another machine can expect the same
numbers: the versions of the libraries that compute (Python, torch, torchvision, numpy, CUDA and
cuDNN where a GPU ran), the CPU's model and instruction-set flags, the thread count, and a digest
of every installed distribution with its version. ``bench env`` prints it.
"""

from __future__ import annotations

import hashlib
import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

LIBRARIES = ("torch", "torchvision", "numpy", "pluggy", "albumentations", "ffcv", "cnnbench")


def distribution_versions(names: tuple[str, ...]) -> dict[str, str]:
    """The installed version of each distribution in ``names`` (those not installed are left out)."""
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def library_versions() -> dict[str, str]:
    return {"python": platform.python_version(), **distribution_versions(LIBRARIES)}


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(device: Any = None) -> dict[str, Any]:
    info: dict[str, Any] = {
        "hostname": platform.node(),
        "platform": platform.platform(),
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
    }
    if device is not None and getattr(device, "type", str(device)) == "cuda":
        import torch  # lazy: torch

        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def git_commit(cwd: Path | None = None) -> dict[str, Any]:
    """The commit of the source tree cnnbench runs from, and whether it had local changes.

    A copy of the tree where git cannot answer (no ``.git``, or ``GIT_DIR`` pointed away from
    a stale one, as on a remote GPU machine) can name its commit in ``CNNBENCH_GIT_COMMIT``;
    the record then says so (``"from": "environment"``) and leaves ``dirty`` unknown.
    """
    where = cwd or Path(__file__).resolve().parent.parent
    from_git = read_git(where)
    if from_git["commit"] is None and os.environ.get("CNNBENCH_GIT_COMMIT"):
        return {"commit": os.environ["CNNBENCH_GIT_COMMIT"], "dirty": None, "from": "environment"}
    return from_git


def read_git(where: Path) -> dict[str, Any]:
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=where,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        found: dict[str, Any] = {"commit": commit, "dirty": bool(dirty)}
        if dirty:  # pin a dirty tree too: the digest of its changes against the commit
            diff = subprocess.run(["git", "diff", "HEAD", "--binary"], cwd=where, capture_output=True,
                                  timeout=30, check=True).stdout
            found["diff_sha256"] = hashlib.sha256(diff).hexdigest()
        return found
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def command_line() -> str:
    return " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])


# CPU features that change which kernels (and so which float rounding) torch uses
NOTABLE_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile")


def cpu_flags() -> list[str]:
    """The CPU's instruction-set flags (``/proc/cpuinfo``), sorted; empty where unknown."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return sorted(set(line.split(":", 1)[1].split()))
    except OSError:
        pass
    return []


def packages_digest() -> tuple[int, str]:
    """How many distributions are installed, and the SHA-256 of their sorted ``name==version`` lines."""
    lines = sorted({f"{(d.metadata['Name'] or '?').lower()}=={d.version}" for d in metadata.distributions()})
    return len(lines), hashlib.sha256("\n".join(lines).encode()).hexdigest()


def environment(device: str = "cpu", threads: int | None = None) -> dict[str, Any]:
    """What the numbers of a run on ``device`` with ``threads`` torch threads depend on, besides the code."""
    import torch  # lazy: torch

    flags = cpu_flags()
    count, digest = packages_digest()
    env: dict[str, Any] = {
        **library_versions(),
        "cpu": cpu_name(),
        "cpu_flags": [f for f in NOTABLE_FLAGS if f in flags],
        "cpu_flags_sha256": hashlib.sha256(" ".join(flags).encode()).hexdigest() if flags else None,
        "threads": threads if threads is not None else torch.get_num_threads(),
        "device": device,
        "packages": count,
        "packages_sha256": digest,
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        env["cuda"] = torch.version.cuda
        env["cudnn"] = torch.backends.cudnn.version()
        env["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return env

