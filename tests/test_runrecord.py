"""Run records: atomic, never overwritten, read leniently."""

from __future__ import annotations

import json

import pytest

from harness.runrecord import SCHEMA_VERSION, RecordWarning, iter_records, new_run_id, read_record, write_record


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


def test_write_then_read(tmp_path):
    path = write_record(record(), tmp_path)
    assert path.name == "r1.json"
    assert read_record(path)["final_test_acc"] == 0.5
    assert [p.name for p in tmp_path.iterdir()] == ["r1.json"]  # no temporary file left behind


def test_never_overwrites(tmp_path):
    write_record(record(), tmp_path)
    with pytest.raises(FileExistsError):
        write_record(record(final_test_acc=0.9), tmp_path)
    assert json.loads((tmp_path / "r1.json").read_text())["final_test_acc"] == 0.5
    assert len(list(tmp_path.iterdir())) == 1


def test_bad_files_are_skipped_with_a_warning_naming_them(tmp_path):
    write_record(record("good"), tmp_path)
    (tmp_path / "half.json").write_text('{"run_id": "half", "model": ')
    (tmp_path / "list.json").write_text("[1, 2]")
    (tmp_path / "missing.json").write_text(json.dumps({"run_id": "x"}))
    with pytest.warns(RecordWarning) as caught:
        loaded = list(iter_records(tmp_path))
    assert [r.data["run_id"] for r in loaded] == ["good"]
    messages = " ".join(str(w.message) for w in caught)
    assert "half.json" in messages and "list.json" in messages and "missing.json: missing" in messages


def test_old_schema_is_upgraded(tmp_path):
    old = record()
    del old["schema_version"]
    (tmp_path / "old.json").write_text(json.dumps(old))
    data = read_record(tmp_path / "old.json")
    assert data["schema_version"] == SCHEMA_VERSION and data["normalizer"] == "batch" and data["loader"] == "memory"


def test_newer_schema_is_refused(tmp_path):
    (tmp_path / "new.json").write_text(json.dumps(record(schema_version=SCHEMA_VERSION + 1)))
    with pytest.raises(ValueError, match="newer"):
        read_record(tmp_path / "new.json")


def test_run_ids_are_unique_and_sortable():
    ids = {new_run_id("mnist_gap", 0) for _ in range(50)}
    assert len(ids) == 50
    assert all(i.split("-")[0].endswith("Z") for i in ids)
