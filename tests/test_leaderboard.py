"""Leaderboard: grouping, target arithmetic, rendering, filters, speed, and the generated files."""

from __future__ import annotations

import csv
import io
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import support
from click.testing import CliRunner
from support import ROOT, make_record, write_records

from cnnbench.cli import main
from cnnbench.records import Target
from cnnbench.reports import leaderboard as lb
from cnnbench.reports import render
from cnnbench.runrecord import RunRecord

T10K = Target("t10k", "mnist", 0.994, 10_000, 15, "test")
T20K = Target("t20k", "mnist", 0.994, 20_000, None, "test")


def rows_for(records: list[RunRecord], targets: list[Target] | None = None) -> list[lb.Row]:
    return support.rows_for(records, [T10K] if targets is None else targets)


def bench(*args: str) -> Any:
    return CliRunner().invoke(main, list(args))


# --- grouping and target arithmetic ------------------------------------------------------


def test_seeds_of_one_configuration_form_one_group_with_mean_and_std():
    finals = [0.990, 0.992, 0.997]
    records = [make_record(seed=s, accs=[0.98, a]) for s, a in enumerate(finals)]
    records.append(make_record(seed=0, normalizer="group", accs=[0.98, 0.99]))
    records.append(make_record(seed=0, precision="bf16", accs=[0.98, 0.99]))
    records.append(make_record(seed=0, device="cuda:0", accs=[0.98, 0.99]))  # a GPU run is its own group
    groups = lb.group_records(records)
    assert sorted(len(g.records) for g in groups) == [1, 1, 1, 3]
    three = next(g for g in groups if len(g.records) == 3)
    assert three.mean_final() == pytest.approx(statistics.fmean(finals))
    assert three.std_final() == pytest.approx(statistics.stdev(finals))
    assert min(three.finals) == 0.990
    assert three.seeds() == [0, 1, 2]


def test_pass_rests_on_mean_final_accuracy():
    records = [make_record(seed=s, accs=[0.99, a]) for s, a in enumerate([0.995, 0.994, 0.993])]
    (row,) = rows_for(records)
    assert row.status == lb.PASS  # mean 0.994 meets 99.4% although one seed is below


def test_result_passing_only_at_best_epoch_is_marked():
    records = [make_record(seed=s, accs=[0.99, 0.996, 0.993]) for s in range(2)]
    (row,) = rows_for(records)
    assert row.status == lb.BEST_ONLY
    assert row.reached_epoch == 2


def test_params_must_be_below_and_epochs_at_most_the_limit():
    (row,) = rows_for([make_record(params=10_000, accs=[0.999])])
    assert row.status == "fail (params)"
    (row,) = rows_for([make_record(accs=[0.99] * 15 + [0.999])])
    assert row.status == "fail (epochs)"
    (row,) = rows_for([make_record(accs=[0.99] * 15 + [0.999])], [T20K])  # no epoch limit
    assert row.status == lb.PASS
    (row,) = rows_for([make_record(params=12_000, accs=[0.99, 0.98])])
    assert row.status == "fail (acc, params)"


def test_each_run_is_checked_against_every_target_of_its_dataset():
    other = Target("c", "cifar10", 0.85, 200_000, None, "test")
    rows = rows_for([make_record(params=12_000, accs=[0.995])], [T10K, T20K, other])
    assert {r.target.id: r.status for r in rows} == {"t10k": "fail (params)", "t20k": lb.PASS}


def test_first_epoch_and_time_to_target_use_the_mean_over_seeds():
    a = make_record(seed=0, accs=[0.990, 0.995, 0.996, 0.997], seconds=10.0)
    b = make_record(seed=1, accs=[0.990, 0.992, 0.995, 0.997], seconds=20.0)
    (row,) = rows_for([a, b])
    assert row.reached_epoch == 3  # epoch 2's mean is 0.9935
    assert row.reached_seconds == pytest.approx(3 * 15.0)
    (row,) = rows_for([make_record(accs=[0.90, 0.95])])
    assert row.reached_epoch is None and row.reached_seconds is None


def test_runs_on_a_data_subset_never_pass():
    (row,) = rows_for([make_record(accs=[0.999], test_images=1_000)])
    assert row.status == lb.SUBSET


def test_sort_by_params_and_by_accuracy():
    records = [make_record(model="m1", params=9_000, accs=[0.990]), make_record(model="m2", params=5_000, accs=[0.995])]
    rows = rows_for(records)
    assert [r.group.first.model for r in lb.sort_rows(rows, "params")] == ["m2", "m1"]
    assert [r.group.first.model for r in lb.sort_rows(rows, "acc")] == ["m2", "m1"]
    assert [r.group.first.model for r in lb.sort_rows(rows, "model")] == ["m1", "m2"]


# --- command line -------------------------------------------------------------------------


@pytest.fixture
def results(tmp_path: Path) -> Path:
    out = tmp_path / "results"
    gap = [make_record(seed=seed, accs=[0.99, final]) for seed, final in enumerate([0.995, 0.994, 0.996])]
    write_records(out, *gap, make_record(model="mnist_2block", params=19_728, accs=[0.99, 0.996, 0.993]))
    return out


def test_table_shows_groups_targets_and_the_rule(results: Path):
    res = bench("leaderboard", "--results-dir", str(results))
    assert res.exit_code == 0, res.output
    assert "mnist-10k" in res.output and "mnist-20k" in res.output and "cifar10" not in res.output
    assert "99.50%" in res.output  # mean of 99.5, 99.4, 99.6
    assert "best epoch only  mnist_2block" in res.output  # final 99.3%, best 99.6%
    assert "final-epoch test accuracy" in res.output  # the rule is printed under the table
    assert "Xeon Platinum 8481C, 2 threads" in res.output


@pytest.mark.parametrize("fmt", ["markdown", "csv", "json", "html"])
def test_formats(results: Path, fmt: str):
    res = bench("leaderboard", "--results-dir", str(results), "--format", fmt, "--target", "mnist-10k")
    assert res.exit_code == 0, res.output
    if fmt == "json":
        rows = json.loads(res.output)["rows"]
        gap = next(r for r in rows if r["model"] == "mnist_gap")
        assert gap["n"] == 3 and gap["final_mean"] == pytest.approx(0.995) and gap["status"] == "pass"
        assert {r["target"] for r in rows} == {"mnist-10k"}
    elif fmt == "csv":
        rows = list(csv.DictReader(io.StringIO(res.output)))
        assert {r["model"] for r in rows} == {"mnist_gap", "mnist_2block"}
        assert all(r["target"] == "mnist-10k" for r in rows)
    elif fmt == "markdown":
        assert "| status" in res.output and "## mnist-10k" in res.output
    else:  # a complete page with the report's sortable table component (tests/test_report_site.py checks more)
        assert res.output.startswith("<!DOCTYPE html>") and res.output.rstrip().endswith("</html>")
        assert '<table class="sortable leaderboard">' in res.output and '<h2 id="t-mnist-10k">mnist-10k' in res.output


def test_filters_by_model_and_dataset(results: Path):
    res = bench("leaderboard", "--results-dir", str(results), "--model", "mnist_2block", "--format", "json")
    assert {r["model"] for r in json.loads(res.output)["rows"]} == {"mnist_2block"}
    res = bench("leaderboard", "--results-dir", str(results), "--dataset", "cifar10", "--format", "json")
    assert json.loads(res.output)["rows"] == []


@pytest.mark.parametrize(
    "args, listed",
    [
        (["--target", "nope"],
         "valid targets: cifar10-200k, cifar10-200k-91, cifar10-200k-fast, cifar10-tiny-int8, mnist-10k"),
        (["--model", "nope"], "mnist_gap"),
        (["--dataset", "nope"], "valid datasets: cifar10, mnist"),
    ],
)
def test_unknown_filter_is_a_one_line_error(results: Path, args: list[str], listed: str):
    res = bench("leaderboard", "--results-dir", str(results), *args)
    assert res.exit_code == 1
    assert res.output.count("\n") == 1 and res.output.startswith("error: unknown") and listed in res.output


def test_bad_files_are_skipped_with_a_warning_and_old_schemas_read(results: Path):
    (results / "half.json").write_text('{"run_id": "x", "model": ')
    (results / "partial.json").write_text('{"run_id": "y"}')
    old = make_record(model="mnist_step1", params=10_970, accs=[0.99]).to_json()
    for key in ("schema_version", "normalizer", "loader", "precision", "per_class_acc"):
        old.pop(key)
    (results / "old.json").write_text(json.dumps(old))
    res = bench("leaderboard", "--results-dir", str(results), "--format", "json")
    assert res.exit_code == 0
    assert f"skipping {results / 'half.json'}" in res.stderr and f"skipping {results / 'partial.json'}" in res.stderr
    rows = json.loads(res.stdout)["rows"]
    assert any(r["model"] == "mnist_step1" and r["normalizer"] == "batch" for r in rows)


def _synthetic(results_dir: Path, n: int) -> None:
    models = ["mnist_gap", "mnist_2block", "mnist_step1", "mnist_step2"]
    write_records(results_dir, *(make_record(model=models[i % 4], seed=i // 40, lr=0.01 * (1 + i % 10),
                                             accs=[0.97 + 0.0002 * ((i * 7 + e) % 40) for e in range(15)])
                                 for i in range(n)))


def test_thousand_records_render_in_under_a_second(tmp_path: Path):
    _synthetic(tmp_path, 1000)
    from cnnbench.registry import get_registry

    targets = get_registry().targets()
    timings = []
    for _ in range(3):  # best of three, as timeit does: the machine is shared and noisy
        started = time.perf_counter()
        records = lb.load_records(tmp_path)
        rows = lb.sort_rows(lb.build_rows(lb.group_records(records), targets), "acc")
        text = render.render(rows, "table")
        timings.append(time.perf_counter() - started)
    elapsed = min(timings)
    assert len(records) == 1000 and "mnist_step2" in text
    print(f"1,000 records read, grouped and rendered in {elapsed:.3f}s")
    assert elapsed < 1.0


def test_leaderboard_does_not_import_torch(tmp_path: Path):
    _synthetic(tmp_path, 50)
    code = (
        "import sys; from click.testing import CliRunner; from cnnbench.cli import main; "
        f"r = CliRunner().invoke(main, ['leaderboard', '--results-dir', {str(tmp_path)!r}]); "
        "assert r.exit_code == 0, r.output; assert 'mnist_gap' in r.output; "
        # numpy comes with SciPy's statistics (the confidence intervals); torch never does
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'torchvision')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


# --- generated files -----------------------------------------------------------------------


def test_write_regenerates_board_and_only_the_readme_section(results: Path, tmp_path: Path):
    readme = tmp_path / "README.md"
    readme.write_text(f"# Title\n\nintro\n\n{lb.START}\nold table\n{lb.END}\n\nafter\n")
    res = bench("leaderboard", "--results-dir", str(results), "--write", "--readme", str(readme))
    assert res.exit_code == 0, res.output
    text = readme.read_text()
    assert text.startswith("# Title\n\nintro\n\n" + lb.START) and text.endswith(lb.END + "\n\nafter\n")
    assert "old table" not in text and "### mnist-10k" in text
    board = (results / "LEADERBOARD.md").read_text()
    assert board.startswith("# Leaderboard") and "mnist_2block" in board
    before = readme.read_text()
    bench("leaderboard", "--results-dir", str(results), "--write", "--readme", str(readme))
    assert readme.read_text() == before  # deterministic


def test_write_refuses_a_readme_without_markers(results: Path, tmp_path: Path):
    readme = tmp_path / "README.md"
    readme.write_text("# no markers\n")
    res = bench("leaderboard", "--results-dir", str(results), "--write", "--readme", str(readme))
    assert res.exit_code == 1 and "markers" in res.output


def _tracked_results() -> list[Path] | None:
    """The files git tracks in results/ (None: not a git checkout)."""
    listed = subprocess.run(["git", "ls-files", "-z", "--", "results"], cwd=ROOT, capture_output=True, text=True)
    if listed.returncode != 0:
        return None
    return [ROOT / p for p in sorted(listed.stdout.split("\0")) if p and Path(p).parent == Path("results")]


def _committed_records() -> list[RunRecord]:
    """The records git tracks in results/: a run of one's own, not yet committed, does not make the files stale."""
    from cnnbench.runrecord import is_record_file, read_record

    tracked = _tracked_results()
    if tracked is None:  # not a git checkout: every record there
        return lb.load_records(ROOT / "results")
    return [read_record(p) for p in tracked if is_record_file(p)]


def _committed_verifications(records: list[RunRecord]) -> dict[str, list[dict]]:
    """The passing verifications in the verification files git tracks (a verification of one's own does not count)."""
    from cnnbench.verify.store import passing, verification_path

    results, tracked = ROOT / "results", set(_tracked_results() or [])
    return {r.run_id: found for r in records
            if verification_path(results, r.run_id) in tracked and (found := passing(results, r.run_id))}


def _committed_deployments(records: list[RunRecord]) -> dict[str, dict]:
    """The deployments in the deployment files git tracks (a deployment of one's own does not count)."""
    from cnnbench.deploy.store import deployment_of, deployment_path

    results, tracked = ROOT / "results", set(_tracked_results() or [])
    return {r.run_id: found for r in records
            if deployment_path(results, r.run_id) in tracked and (found := deployment_of(results, r.run_id))}


def _committed_rows() -> list[lb.Row]:
    from cnnbench.registry import get_registry

    registry = get_registry()
    sizes = {n: (e.record.train_size, e.record.test_size) for n, e in registry.entries("datasets").items()}
    targets = registry.targets()
    records = _committed_records()
    groups = lb.group_records(records, _committed_verifications(records), _committed_deployments(records))
    rows = lb.build_rows(groups, targets, sizes)
    return lb.sort_rows(rows, "acc", [t.id for t in targets])


def test_committed_leaderboard_is_up_to_date():
    board = ROOT / "results" / "LEADERBOARD.md"
    assert board.is_file(), "results/LEADERBOARD.md is missing: run `bench leaderboard --write`"
    assert board.read_text() == render.leaderboard_markdown(_committed_rows()), (
        "results/LEADERBOARD.md is stale: run `bench leaderboard --write`"
    )


def test_readme_leaderboard_section_is_up_to_date():
    readme = ROOT / "README.md"
    if not readme.is_file():
        pytest.skip("no README.md yet")
    text = readme.read_text()
    assert text == render.splice_readme(text, render.readme_section(_committed_rows())), (
        "the README's leaderboard section is stale: run `bench leaderboard --write`"
    )


def test_a_mean_just_under_the_target_does_not_print_as_the_target():
    records = [make_record(seed=s, accs=[0.99, a]) for s, a in enumerate([0.9940, 0.9933, 0.9947, 0.9944, 0.9934])]
    (row,) = rows_for(records)
    assert row.status != lb.PASS
    assert "99.396%" in render.render([row])  # not "99.40%", which would read as a pass


def test_throughput_of_a_shared_device_is_marked():
    alone = [make_record(seed=s, launch={"launcher": None, "jobs_on_device": 1}) for s in (0, 1)]
    shared = [make_record(seed=s, lr=0.05, launch={"launcher": "local", "jobs_on_device": 4}) for s in (0, 1)]
    unknown = [make_record(seed=0, lr=0.02)]
    rows = lb.build_rows(lb.group_records([*alone, *shared, *unknown]), [])
    by_lr = {r.group.first.recipe["lr"]: r for r in rows}
    speed = render.HEADERS.index("img/s")
    assert render.display_cells(by_lr[0.05])[speed] == "3,000 (shared 4)"
    assert render.display_cells(by_lr[0.1])[speed] == "3,000" and render.display_cells(by_lr[0.02])[speed] == "3,000"
    assert by_lr[0.05].as_dict()["device_shared_by"] == 4 and by_lr[0.02].as_dict()["device_shared_by"] is None
