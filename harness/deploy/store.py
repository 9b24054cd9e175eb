"""Deployment files beside the records: ``<run_id>.deploy.json`` (the measurements) and the folder
``<run_id>.deploy/`` (``fp32.onnx``, ``int8.onnx``). Pure Python: the leaderboard reads them without
torch. A new deployment replaces the old one whole: the folder is built under a temporary name and
renamed into place, then the JSON is written atomically; a failure leaves the previous one intact."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from cnnbench.errors import RecordError, UsageError
from cnnbench.files import NotARegularFile, read_regular, write_atomic
from cnnbench.runrecord import DEPLOY_SUFFIX

SUFFIX = DEPLOY_SUFFIX
SCHEMA = 1
MAX_BYTES = 4 * 2**20


def deployment_path(results_dir: Path, run_id: str) -> Path:
    return Path(results_dir) / f"{run_id}{SUFFIX}"


def files_dir(results_dir: Path, run_id: str) -> Path:
    return Path(results_dir) / f"{run_id}.deploy"


def read_deployment(path: Path) -> dict[str, Any] | None:
    """The deployment in ``path`` (None when there is none); a damaged file is a ``RecordError``."""
    if not path.exists():
        return None
    try:
        data = json.loads(read_regular(path, MAX_BYTES))
    except (OSError, NotARegularFile, ValueError) as exc:
        raise RecordError(f"{path}: not a readable deployment file ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("int8"), dict) or not isinstance(data.get("fp32"), dict):
        raise RecordError(f"{path}: not a deployment file (no fp32 and int8 sections)")
    return data


def deployment_of(results_dir: Path, run_id: str) -> dict[str, Any] | None:
    """The run's deployment, for reports: an unreadable file counts as none."""
    try:
        return read_deployment(deployment_path(results_dir, run_id))
    except RecordError:
        return None


def check_deployments(results_dir: Path, run_ids: set[str]) -> tuple[int, list[str]]:
    """``bench check`` for deployment files: each readable, of a record in ``run_ids``, and its ``.onnx``
    files present with the SHA-256 it states. Returns how many were checked and the problems."""
    problems, checked = [], 0
    for path in sorted(Path(results_dir).glob(f"*{SUFFIX}")):
        checked += 1
        run_id = path.name[: -len(SUFFIX)]
        try:
            data = read_deployment(path)
        except RecordError as exc:
            problems.append(str(exc))
            continue
        assert data is not None
        if data.get("run_id") != run_id:
            problems.append(f"{path}: it deploys run {data.get('run_id')!r}, not the one its name says")
        if run_id not in run_ids:
            problems.append(f"{path}: there is no record {run_id}.json beside it")
        for precision in ("fp32", "int8"):
            onnx = files_dir(results_dir, run_id) / str(data[precision].get("file", ""))
            if not onnx.is_file():
                problems.append(f"{path}: its {precision} model {onnx} is missing")
            elif hashlib.sha256(onnx.read_bytes()).hexdigest() != data[precision].get("file_sha256"):
                problems.append(f"{path}: its {precision} model {onnx.name} is not the one it measured "
                                "(digest differs)")
    return checked, problems


def staging_dir(results_dir: Path, run_id: str) -> Path:
    """A fresh temporary folder in ``results_dir`` for the files of a deployment being made; an
    unwritable output folder is one line, before anything is computed."""
    results_dir = Path(results_dir)
    try:
        results_dir.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f".{run_id}.deploy.", dir=results_dir))
    except OSError as exc:
        raise UsageError(f"cannot write deployment files into {results_dir} ({exc.strerror or exc})") from None


def publish(results_dir: Path, run_id: str, staged: Path, result: dict[str, Any]) -> Path:
    """Move ``staged`` into place as ``<run_id>.deploy/`` and write ``<run_id>.deploy.json``."""
    final, old = files_dir(results_dir, run_id), None
    if final.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{run_id}.deploy.old.", dir=results_dir))
        os.replace(final, old / "files")
    moved = False
    try:
        os.replace(staged, final)
        moved = True
        path = deployment_path(results_dir, run_id)
        write_atomic(path, json.dumps({"schema": SCHEMA, **result}, indent=1, allow_nan=False) + "\n")
    except BaseException:  # put the previous deployment back as it was
        if moved:
            shutil.rmtree(final, ignore_errors=True)
        if old is not None:
            os.replace(old / "files", final)
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    return path
