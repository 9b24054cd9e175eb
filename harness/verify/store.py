"""Verification files: ``<run_id>.verify.json`` beside the record, a list of every verification of
that run (where, when, with what, the verdict). The record itself is never modified; a new
verification is appended and the file replaced atomically."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from cnnbench.errors import RecordError
from cnnbench.files import NotARegularFile, read_regular, write_atomic
from cnnbench.runrecord import VERIFICATION_SUFFIX

SUFFIX = VERIFICATION_SUFFIX
SCHEMA = 1
MAX_BYTES = 16 * 2**20
Verdict = Literal["reproduced exactly", "reproduced within tolerance", "not reproduced"]
PASSING: tuple[Verdict, ...] = ("reproduced exactly", "reproduced within tolerance")


def verification_path(results_dir: Path, run_id: str) -> Path:
    return Path(results_dir) / f"{run_id}{SUFFIX}"


def is_verification_file(path: Path) -> bool:
    return path.name.endswith(SUFFIX)


def read_verifications(path: Path) -> list[dict[str, Any]]:
    """The verifications in ``path`` (empty when there is none); a damaged file is a ``RecordError``."""
    if not path.exists():
        return []
    try:
        data = json.loads(read_regular(path, MAX_BYTES))
    except (OSError, NotARegularFile, ValueError) as exc:
        raise RecordError(f"{path}: not a readable verification file ({exc})") from None
    items = data.get("verifications") if isinstance(data, dict) else None
    if not isinstance(items, list) or not all(isinstance(v, dict) for v in items):
        raise RecordError(f"{path}: not a verification file (no list of verifications)")
    return items


def append_verification(results_dir: Path, run_id: str, verification: dict[str, Any]) -> Path:
    path = verification_path(results_dir, run_id)
    items = [*read_verifications(path), verification]
    write_atomic(path, json.dumps({"schema": SCHEMA, "run_id": run_id, "verifications": items}, indent=1) + "\n")
    return path


def passing(results_dir: Path, run_id: str) -> list[dict[str, Any]]:
    """The verifications of ``run_id`` whose verdict reproduced it (an unreadable file counts as none)."""
    try:
        items = read_verifications(verification_path(results_dir, run_id))
    except RecordError:
        return []
    return [v for v in items if v.get("verdict") in PASSING]
