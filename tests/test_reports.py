"""Per-run reports: finding a run, curves PNG, misclassified grid, confusion, show, compare."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
from click.testing import CliRunner
from support import make_record, write_records

from cnnbench.cli import main
from cnnbench.reports.runs import resolve_run
from cnnbench.runrecord import RunRecord

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def bench(*args: str):
    return CliRunner().invoke(main, list(args))


@pytest.fixture
def two_runs(tmp_path: Path) -> tuple[Path, RunRecord, RunRecord]:
    results = tmp_path / "results"
    a, b = write_records(results, make_record(seed=0, accs=[0.97, 0.985, 0.99]),
                         make_record(seed=1, accs=[0.96, 0.99, 0.992], lr=0.05))
    return results, a, b


def test_run_is_found_by_id_prefix_or_path(two_runs):
    results, a, _ = two_runs
    assert resolve_run(a.run_id, results)[1].run_id == a.run_id
    assert resolve_run(a.run_id[:20], results)[1].run_id == a.run_id
    assert resolve_run(str(results / f"{a.run_id}.json"), "elsewhere")[1].run_id == a.run_id


@pytest.mark.parametrize("ref, message", [("2026", "is ambiguous"), ("nope", "no run 'nope'")])
def test_bad_run_reference_is_a_one_line_error_listing_ids(two_runs, ref: str, message: str):
    results, a, b = two_runs
    res = bench("show", ref, "--results-dir", str(results))
    assert res.exit_code == 1 and res.output.count("\n") == 1
    assert message in res.output and a.run_id in res.output and b.run_id in res.output


def test_plot_writes_a_png(two_runs, tmp_path: Path):
    results, a, _ = two_runs
    out = tmp_path / "curves.png"
    res = bench("plot", a.run_id, "--results-dir", str(results), "--out", str(out))
    assert res.exit_code == 0, res.output
    data = out.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 10_000


def test_confusion_and_per_class_tables(two_runs):
    results, a, _ = two_runs
    res = bench("confusion", a.run_id, "--results-dir", str(results))
    assert res.exit_code == 0, res.output
    assert "93.46%" in res.output  # class 3: 100 of 107
    row3 = next(line for line in res.output.splitlines() if line.split()[:1] == ["3"] and len(line.split()) == 11)
    assert row3.split()[1:] == ["0", "0", "0", "100", "0", "7", "0", "0", "0", "0"]


def test_show_lists_settings_epochs_and_targets(two_runs):
    results, a, _ = two_runs
    res = bench("show", a.run_id[:20], "--results-dir", str(results))
    assert res.exit_code == 0, res.output
    assert re.search(r"^final test acc +99.00%$", res.output, re.M)
    assert "mnist-10k: fail (acc)" in res.output
    assert "confusion matrix" in res.output


def test_compare_marks_differences(two_runs):
    results, a, b = two_runs
    res = bench("compare", a.run_id, b.run_id, "--results-dir", str(results))
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert any(line.startswith("*") and "recipe.lr" in line and "0.1" in line and "0.05" in line for line in lines)
    assert any(line.split()[:1] == ["model"] for line in lines)  # equal rows carry no mark
    assert any(line.split() == ["3", "99.00%", "99.20%", "+0.20"] for line in lines)


def test_misclassified_without_weights_is_an_error(two_runs):
    results, a, _ = two_runs
    res = bench("misclassified", a.run_id, "--results-dir", str(results))
    assert res.exit_code == 1 and "saved no weights" in res.output


def test_misclassified_grid_matches_the_recorded_confusion(tmp_path: Path, data_dir: Path, registry):
    """Weights of a fresh model, scored by the trainer's own evaluate(); the report must find the same errors."""
    import torch

    from cnnbench.records import LoaderRequest, resolve
    from cnnbench.training.train import autocast, evaluate

    torch.manual_seed(0)
    model = registry.create_model("mnist_gap").eval()
    dataset = registry.dataset("mnist")
    images, labels = resolve(dataset.load)(str(data_dir), "test")
    n = 300
    request = LoaderRequest(dataset=dataset, split="test", images=images[:n], labels=labels[:n], batch_size=128,
                            shuffle=False, seed=0, device=torch.device("cpu"))
    batches = resolve(registry.loader("memory").factory)(request)
    _, acc, confusion = evaluate(model, batches, 10, lambda: autocast(torch.device("cpu"), "fp32"))
    results = tmp_path / "results"
    record = make_record(accs=[acc], test_images=n, confusion=confusion.tolist())
    record = dataclasses.replace(record, weights=f"{record.run_id}.pt")
    write_records(results, record)
    torch.save(model.state_dict(), results / record.weights)

    out = tmp_path / "wrong.png"
    res = bench("misclassified", record.run_id, "--results-dir", str(results), "--data-dir", str(data_dir),
                "--out", str(out))
    assert res.exit_code == 0, res.output
    errors = n - int(confusion.diag().sum())
    assert errors > 0
    assert f"{errors} of {n} misclassified (the record's confusion matrix has {errors})" in res.output
    assert out.read_bytes().startswith(PNG_MAGIC)
