"""Run records: atomic, never overwritten, read leniently, typed, strict JSON."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest

from cnnbench.runrecord import (
    SCHEMA_VERSION,
    RecordWarning,
    RunRecord,
    is_record_file,
    iter_records,
    new_run_id,
    read_record,
    record_json,
    upgrade,
    write_record,
)

RESULTS = Path(__file__).resolve().parents[1] / "results"


def record(run_id: str = "r1", **extra) -> dict:
    base = {
        "schema_version": SCHEMA_VERSION,
        "run_id": run_id,
        "model": "m",
        "dataset": "mnist",
        "params": 10,
        "epochs": [{"epoch": 1, "test_acc": 0.5}],
        "final_test_acc": 0.5,
        "best_test_acc": 0.5,
    }
    return {**base, **extra}


def typed(run_id: str = "r1", **extra) -> RunRecord:
    return RunRecord.from_json(record(run_id, **extra))


def test_write_then_read(tmp_path):
    path = write_record(typed(), tmp_path)
    assert path.name == "r1.json"
    assert read_record(path).final_test_acc == 0.5
    assert [p.name for p in tmp_path.iterdir()] == ["r1.json"]  # no temporary file left behind


def test_never_overwrites(tmp_path):
    write_record(typed(), tmp_path)
    with pytest.raises(FileExistsError):
        write_record(typed(final_test_acc=0.9), tmp_path)
    assert json.loads((tmp_path / "r1.json").read_text())["final_test_acc"] == 0.5
    assert len(list(tmp_path.iterdir())) == 1


def test_bad_files_are_skipped_with_a_warning_naming_them(tmp_path):
    write_record(typed("good"), tmp_path)
    (tmp_path / "half.json").write_text('{"run_id": "half", "model": ')
    (tmp_path / "list.json").write_text("[1, 2]")
    (tmp_path / "missing.json").write_text(json.dumps({"run_id": "x"}))
    with pytest.warns(RecordWarning) as caught:
        loaded = list(iter_records(tmp_path))
    assert [r.data.run_id for r in loaded] == ["good"]
    messages = " ".join(str(w.message) for w in caught)
    assert "half.json" in messages and "list.json" in messages and "missing.json: missing" in messages


def test_old_schema_is_upgraded(tmp_path):
    old = record()
    del old["schema_version"]
    (tmp_path / "old.json").write_text(json.dumps(old))
    data = read_record(tmp_path / "old.json")
    assert data.schema_version == SCHEMA_VERSION and data.normalizer == "batch" and data.loader == "memory"


def test_newer_schema_is_refused(tmp_path):
    (tmp_path / "new.json").write_text(json.dumps(record(schema_version=SCHEMA_VERSION + 1)))
    with pytest.raises(ValueError, match="newer"):
        read_record(tmp_path / "new.json")


def test_run_ids_are_unique_and_sortable():
    ids = {new_run_id("mnist_gap", 0) for _ in range(50)}
    assert len(ids) == 50
    assert all(i.split("-")[0].endswith("Z") for i in ids)


@pytest.mark.parametrize("path", sorted(p for p in RESULTS.glob("*.json") if is_record_file(p)), ids=lambda p: p.stem)
def test_committed_records_round_trip(path: Path):
    """Reading a committed record and writing it back gives the file's JSON (plus what the upgrade adds)."""
    raw = json.loads(path.read_text())
    data = RunRecord.from_json(raw)
    out = data.to_json()
    expected = upgrade(dict(raw))  # schema_version, and plugins (unknown for older runs)
    assert {k: v for k, v in out.items() if k in expected or v is not None} == expected
    assert [k for k in out if k in raw] == list(raw)  # the file's key order
    assert RunRecord.from_json(out) == data


def test_committed_records_exist():
    assert len(list(RESULTS.glob("*.json"))) > 0


@pytest.mark.parametrize(
    "change, message",
    [({"params": "many"}, "params is str"), ({"epochs": [{"epoch": 1, "test_acc": "x"}]}, "test_acc 'x'")],
)
def test_well_formed_json_of_wrong_types_is_skipped_with_a_warning(tmp_path, change: dict, message: str):
    write_record(typed("good"), tmp_path)
    (tmp_path / "typo.json").write_text(json.dumps(record("typo", **change)))
    with pytest.warns(RecordWarning) as caught:
        loaded = list(iter_records(tmp_path))
    assert [r.data.run_id for r in loaded] == ["good"]
    assert len(caught) == 1
    assert str(tmp_path / "typo.json") in str(caught[0].message) and message in str(caught[0].message)


def test_record_json_refuses_nan(tmp_path):
    bad = dataclasses.replace(typed(), total_seconds=math.nan)
    with pytest.raises(ValueError):
        record_json(bad)
    with pytest.raises(ValueError):
        write_record(bad, tmp_path)
    assert list(tmp_path.iterdir()) == []  # nothing half-written
    assert json.loads(record_json(typed()))["final_test_acc"] == 0.5  # a finite record is plain JSON
