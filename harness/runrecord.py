"""Run records: one JSON file per run in ``results/``, written atomically, never overwritten.

Reading is lenient: a malformed or half-written file is skipped with a warning that
names it, and records of older schema versions are upgraded on read.
"""

from __future__ import annotations

import json
import os
import secrets
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1
REQUIRED = ("run_id", "model", "dataset", "params", "epochs", "final_test_acc", "best_test_acc")


class RecordWarning(UserWarning):
    """A results file that could not be used."""


def new_run_id(model: str, seed: int, now: datetime | None = None) -> str:
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{model}-s{seed}-{secrets.token_hex(4)}"


def write_exclusive(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file and a hard link, so the file
    appears whole or not at all, and an existing file is never replaced."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.link(tmp, path)  # fails with FileExistsError instead of overwriting
    finally:
        os.unlink(tmp)


def write_record(record: dict[str, Any], results_dir: Path) -> Path:
    """Write ``record`` as ``<results_dir>/<run_id>.json``; returns the path."""
    path = Path(results_dir) / f"{record['run_id']}.json"
    write_exclusive(path, (json.dumps(record, indent=1, sort_keys=False) + "\n").encode())
    return path


def upgrade(record: dict[str, Any]) -> dict[str, Any]:
    """Bring an older record up to the current schema (version 0 had no version field)."""
    version = record.get("schema_version", 0)
    if version > SCHEMA_VERSION:
        raise ValueError(f"schema version {version} is newer than this cnnbench reads ({SCHEMA_VERSION})")
    record.setdefault("normalizer", "batch")
    record.setdefault("augmentation", "none")
    record.setdefault("loader", "memory")
    record.setdefault("precision", "fp32")
    record.setdefault("per_class_acc", {})
    record["schema_version"] = SCHEMA_VERSION
    return record


@dataclass(frozen=True)
class LoadedRecord:
    path: Path
    data: dict[str, Any]


def read_record(path: Path) -> dict[str, Any]:
    """Read and validate one record; raises ``ValueError`` saying what is wrong."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"not readable JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    missing = [key for key in REQUIRED if key not in data]
    if missing:
        raise ValueError(f"missing {', '.join(missing)}")
    return upgrade(data)


def iter_records(results_dir: Path) -> Iterator[LoadedRecord]:
    """Every usable record under ``results_dir``, oldest first by file name; bad files warn."""
    root = Path(results_dir)
    if not root.is_dir():
        return
    for path in sorted(root.glob("*.json")):
        try:
            yield LoadedRecord(path, read_record(path))
        except ValueError as exc:
            warnings.warn(f"skipping {path}: {exc}", RecordWarning, stacklevel=2)
