"""Where and with what a run happened: machine, library versions, git commit."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

LIBRARIES = ("torch", "torchvision", "numpy", "pluggy", "albumentations", "ffcv", "cnnbench")


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


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
        import torch

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
        return {"commit": commit, "dirty": bool(dirty)}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def command_line() -> str:
    return " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])
