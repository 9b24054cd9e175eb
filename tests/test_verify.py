"""Results anyone can check: fingerprints in every record, ``bench check``, ``bench verify`` and the
statistics the leaderboard owes (issue "Results anyone can check")."""

from __future__ import annotations

import json
import math
import shutil
import statistics
from pathlib import Path

import pytest
from click.testing import CliRunner
from support import ROOT, make_record, one_line_error, write_records

from cnnbench.cli import main
from cnnbench.reports import leaderboard as lb
from cnnbench.reports import stats
from cnnbench.runrecord import is_record_file, read_record, record_digest
from cnnbench.verify.check import check_results
from cnnbench.verify.store import read_verifications, verification_path

SMALL = ["--limit-train", "1024", "--limit-test", "256", "--no-progress"]


def bench(*args: str):
    return CliRunner().invoke(main, list(args))


@pytest.fixture(scope="module")
def two_seeds(tmp_path_factory, data_dir) -> Path:
    """Two fingerprinted mnist_fast runs (2 epochs on 1,024 images), made once for the module."""
    results = tmp_path_factory.mktemp("verify") / "results"
    result = bench("run", "--model", "mnist_fast", "--seeds", "2", "--epochs", "2", *SMALL,
                   "--data-dir", str(data_dir), "--results-dir", str(results))
    assert result.exit_code == 0, result.output
    return results


@pytest.fixture
def results(two_seeds, tmp_path) -> Path:
    """A copy of the two runs a test may spoil."""
    copy = tmp_path / "results"
    shutil.copytree(two_seeds, copy)
    return copy


def records_in(results: Path) -> list[Path]:
    return sorted(p for p in results.glob("*.json") if not p.name.endswith(".verify.json"))


def edit_record(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data, indent=1))


# --- fingerprints ----------------------------------------------------------------------------


def test_every_new_record_is_fingerprinted(two_seeds, data_dir):
    for path in records_in(two_seeds):
        data = json.loads(path.read_text())
        prints = data["fingerprints"]
        assert data["schema_version"] == 4
        assert prints["record_sha256"] == record_digest(data)
        assert len(prints["weights_sha256"]) == 64 and len(prints["weights_file_sha256"]) == 64
        sums = dict(line.split()[::-1] for line in (data_dir / "SHA256SUMS").read_text().splitlines())
        assert prints["data"] and all(sums[name] == digest for name, digest in prints["data"].items())
        env = prints["environment"]
        assert {"python", "torch", "torchvision", "numpy", "cpu", "threads", "packages_sha256"} <= set(env)
        assert data["git"]["commit"]


def test_bench_env_prints_what_a_record_stores():
    result = bench("env", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert {"torch", "cpu", "cpu_flags", "threads", "packages_sha256"} <= set(data["environment"])
    assert "commit" in data["code"]


# --- bench check -------------------------------------------------------------------------------


def test_the_committed_results_pass_the_check():
    result = check_results(ROOT / "results")
    assert result.problems == []
    assert result.checked >= 40


def test_check_passes_fresh_records_and_names_old_ones(results):
    old = records_in(results)[0]
    edit_record(old, lambda d: (d.pop("fingerprints"), d.update(schema_version=3)))
    outcome = bench("check", "--results-dir", str(results))
    assert outcome.exit_code == 0, outcome.output
    assert "1 fingerprinted, 1 not fingerprinted" in outcome.output


def test_an_accuracy_edited_by_hand_is_caught_by_check_and_verify(results, data_dir):
    path = records_in(results)[0]
    edit_record(path, lambda d: d["epochs"][0].update(test_acc=0.97))
    outcome = bench("check", "--results-dir", str(results))
    assert outcome.exit_code == 1
    assert f"bad: {path}: the record was changed after it was written" in outcome.output
    verify = bench("verify", path.stem, "--epochs", "1", "--results-dir", str(results), "--data-dir", str(data_dir))
    assert verify.exit_code == 1 and "not reproduced" in verify.output
    assert "test_acc" in verify.output and "0.97" in verify.output


def test_weights_of_another_seed_are_caught_by_check_and_verify_full(results, data_dir):
    first, second = records_in(results)
    shutil.copy(second.with_suffix(".pt"), first.with_suffix(".pt"))
    outcome = bench("check", "--results-dir", str(results))
    assert outcome.exit_code == 1 and "is not the run's weights (digest differs)" in outcome.output
    verify = bench("verify", first.stem, "--full", "--results-dir", str(results), "--data-dir", str(data_dir))
    assert verify.exit_code == 1
    assert "weights differ: not reproduced" in verify.output  # the recorded digest, not the swapped file, is the truth
    edit_record(first, lambda d: d["fingerprints"].pop("weights_sha256"))  # an older record: no digest to trust
    verify = bench("verify", first.stem, "--full", "--results-dir", str(results), "--data-dir", str(data_dir))
    assert verify.exit_code == 1 and "weights differ" in verify.output


def test_an_edited_recipe_is_caught_by_check_and_verify(results, data_dir):
    path = records_in(results)[0]
    edit_record(path, lambda d: d["recipe"].update(lr=0.05))
    assert "digest does not match" in bench("check", "--results-dir", str(results)).output
    verify = bench("verify", path.stem, "--epochs", "1", "--results-dir", str(results), "--data-dir", str(data_dir))
    assert verify.exit_code == 1 and "not reproduced" in verify.output


@pytest.mark.parametrize(("change", "says"), [
    (lambda d: d.update(final_test_acc=0.5), "final_test_acc 0.5 is not the last epoch's"),
    (lambda d: d.update(best_test_acc=0.01), "best_test_acc 0.01 is not the best epoch's"),
    (lambda d: d["confusion"][0].__setitem__(0, d["confusion"][0][0] + 1), "the confusion matrix counts"),
    (lambda d: d.update(epochs_run=7), "epochs_run is 7 but 2 epochs are listed"),
    (lambda d: d.update(best_epoch=1) if d["best_epoch"] == 2 else d.update(best_epoch=2), "best_epoch"),
])
def test_an_inconsistent_record_is_named_even_with_a_recomputed_digest(results, change, says):
    path = records_in(results)[0]

    def spoil(data):
        change(data)
        data["fingerprints"]["record_sha256"] = record_digest(data)  # a careful forger

    edit_record(path, spoil)
    outcome = check_results(results)
    assert any(problem.startswith(f"{path}: ") and says in problem for problem in outcome.problems), outcome.problems


def test_two_records_claiming_one_job_are_named(results):
    for path in records_in(results):
        edit_record(path, lambda d: d["launch"].update(job_key="abc123"))
    problems = check_results(results).problems
    assert any("2 records claim sweep job abc123" in p for p in problems)


def test_a_record_under_another_name_and_an_unreadable_one_are_named(results):
    path = records_in(results)[0]
    shutil.copy(path, results / "renamed.json")
    (results / "garbage.json").write_text("{not json")
    problems = check_results(results).problems
    assert any("renamed.json: its run_id is" in p for p in problems)
    assert any("garbage.json: unreadable record" in p for p in problems)


def test_a_missing_weights_file_is_named(results):
    path = records_in(results)[0]
    path.with_suffix(".pt").unlink()
    assert any("weights file" in p and "is missing" in p for p in check_results(results).problems)


# --- bench verify ------------------------------------------------------------------------------


def test_verify_reproduces_a_run_exactly_and_never_touches_the_record(results, data_dir):
    path = records_in(results)[0]
    before = path.read_bytes()
    outcome = bench("verify", path.stem, "--epochs", "1", "--results-dir", str(results), "--data-dir", str(data_dir))
    assert outcome.exit_code == 0, outcome.output
    assert "first 1 of 2 epochs, 5 numbers: reproduced exactly (same environment" in outcome.output
    assert path.read_bytes() == before
    (verification,) = read_verifications(verification_path(results, path.stem))
    assert verification["verdict"] == "reproduced exactly" and verification["differences"] == []
    assert verification["environment"]["here"]["torch"] and verification["host"]
    full = bench("verify", path.stem, "--full", "--results-dir", str(results), "--data-dir", str(data_dir))
    assert full.exit_code == 0 and "weights identical: reproduced exactly" in full.output, full.output
    assert len(read_verifications(verification_path(results, path.stem))) == 2
    assert check_results(results).problems == []  # verification files are not records


def test_verify_elsewhere_uses_the_stated_tolerance(results, data_dir):
    path = records_in(results)[0]

    def elsewhere(data):
        data["fingerprints"]["environment"]["cpu"] = "Some Other CPU"
        data["epochs"][0]["test_acc"] += 0.003  # within half a point
        data["fingerprints"]["record_sha256"] = record_digest(data)

    edit_record(path, elsewhere)
    outcome = bench("verify", path.stem, "--epochs", "1", "--results-dir", str(results), "--data-dir", str(data_dir))
    assert outcome.exit_code == 0, outcome.output
    assert "reproduced within tolerance (environment differs: cpu Some Other CPU ->" in outcome.output
    assert "tolerance: accuracies within 0.5 points" in outcome.output


def test_the_leaderboard_counts_verified_seeds(results, data_dir):
    path = records_in(results)[0]
    assert bench("verify", path.stem, "--epochs", "1", "--results-dir", str(results),
                 "--data-dir", str(data_dir)).exit_code == 0
    board = json.loads(bench("leaderboard", "--results-dir", str(results), "--format", "json").output)
    row = board["rows"][0]
    assert row["verified"] == 1 and row["verified_runs"] == [path.stem]
    assert "reproduced exactly" in row["verified_where"][0]
    table = bench("leaderboard", "--results-dir", str(results)).output
    assert " 1/2 " in table


@pytest.mark.parametrize(("args", "says"), [
    (["verify", "nothing-like-it"], "no run matches 'nothing-like-it'"),
    (["verify", "x", "--full", "--epochs", "1"], "--full trains every epoch"),
    (["verify"], "Missing argument"),
])
def test_verify_usage_errors_are_one_line(results, args, says):
    one_line_error(bench(*args, "--results-dir", str(results)), says)


def test_verify_a_model_that_is_not_installed_is_one_line(results):
    path = records_in(results)[0]
    edit_record(path, lambda d: d.update(model="gone_model"))
    one_line_error(bench("verify", path.stem, "--results-dir", str(results)),
                   "used model 'gone_model' from plugin 'fast_models'", "which is not installed here")


def test_verify_a_model_that_changed_is_one_line(results):
    path = records_in(results)[0]
    edit_record(path, lambda d: d.update(params=1234))
    one_line_error(bench("verify", path.stem, "--results-dir", str(results)),
                   "model 'mnist_fast' changed since run", "7,966 parameters now, 1,234 recorded")


def test_verify_an_unreadable_record_is_one_line(results):
    path = records_in(results)[0]
    path.write_text("{")
    one_line_error(bench("verify", str(path), "--results-dir", str(results)), "not a readable run record")


# --- statistics --------------------------------------------------------------------------------


def test_statistics_against_a_hand_computation():
    """Five finals (the committed mnist_fast seeds): mean 99.422%, s = 0.0311 points;
    t(0.975, 4) = 2.7764 -> half width 2.7764 * 0.0311 / sqrt(5) = 0.0387 points;
    t = (99.422 - 99.40) / (0.0311 / sqrt 5) = 1.5796 -> one-sided p = 0.0947 (t distribution, 4 df)."""
    finals = [0.9945, 0.9940, 0.9943, 0.9938, 0.9945]
    summary = stats.summarize(finals)
    mean, s = statistics.fmean(finals), statistics.stdev(finals)
    assert math.isclose(summary.mean, 0.99422) and math.isclose(summary.std or 0, s)
    assert math.isclose((summary.ci_high or 0) - mean, 2.776445 * s / math.sqrt(5), rel_tol=1e-5)
    assert math.isclose(summary.ci_high or 0, 0.9946067, abs_tol=1e-7)
    assert math.isclose(stats.p_mean_at_least(finals, 0.994) or 0, 0.0947, abs_tol=5e-4)
    assert stats.summarize([0.99]).ci_low is None and stats.p_mean_at_least([0.99], 0.98) is None
    assert stats.p_mean_at_least([0.99, 0.99], 0.98) == 0.0
    assert stats.median_seconds([3.0, 1.0, 2.0]) == 2.0
    assert stats.trimmed_mean_seconds([1.0, 2.0, 3.0, 4.0]) is None
    assert stats.trimmed_mean_seconds([10.0, 1.0, 2.0, 3.0, 100.0]) == 5.0


def test_too_few_seeds_are_provisional_and_confidence_can_be_required():
    from cnnbench.records import Target

    records = [make_record(seed=s, accs=(acc,)) for s, acc in enumerate([0.995, 0.996])]
    group = lb.group_records(records)[0]
    assert lb.check(group, Target("t", "mnist", 0.99, 10**6, None, "x", min_seeds=3), False).status == \
        "provisional (2 of 3 seeds)"
    assert lb.check(group, Target("t", "mnist", 0.99, 10**6, None, "x", min_seeds=2), False).status == "pass"
    strict = Target("t", "mnist", 0.9949, 10**6, None, "x", confidence=0.95)
    assert "not 95% confident" in lb.check(group, strict, False).status


def test_the_leaderboard_json_and_csv_carry_the_statistics(tmp_path):
    write_records(tmp_path, *[make_record(seed=s, accs=(acc,), wall_seconds=w)
                              for s, (acc, w) in enumerate([(0.9941, 50.0), (0.9943, 60.0), (0.9945, 70.0),
                                                            (0.9939, 55.0), (0.9947, 90.0)])])
    board = json.loads(bench("leaderboard", "--results-dir", str(tmp_path), "--format", "json").output)
    row = next(r for r in board["rows"] if r["target"] == "mnist-10k")
    assert row["n"] == 5 and row["final_ci95_low"] < row["final_mean"] < row["final_ci95_high"]
    assert 0 < row["p_reaching_target"] < 0.5
    assert row["wall_s_median"] == 60.0 and row["wall_s_trimmed_mean"] == 61.666666666666664
    csv_text = bench("leaderboard", "--results-dir", str(tmp_path), "--format", "csv").output
    assert "final_ci95_low" in csv_text.splitlines()[0] and "verified_where" in csv_text.splitlines()[0]


def test_an_existing_record_reads_as_not_fingerprinted():
    committed = [p for p in sorted((ROOT / "results").glob("*mnist_fast-s0*.json")) if is_record_file(p)][0]
    assert read_record(committed).fingerprints == {}


def test_the_report_pages_show_the_statistics_and_verified_seeds(results, data_dir, tmp_path):
    path = records_in(results)[0]
    assert bench("verify", path.stem, "--epochs", "1", "--results-dir", str(results),
                 "--data-dir", str(data_dir)).exit_code == 0
    site = tmp_path / "site"
    assert bench("report", "--results-dir", str(results), "--out", str(site)).exit_code == 0
    (page,) = (site / "runs").glob("mnist_fast-*.html")
    text = page.read_text()
    assert "95% confidence interval of the mean" in text and "p (mean reaches it)" in text
    assert "verified seeds</th><td>1 of 2: " in text and "reproduced exactly" in text
    index = (site / "index.html").read_text()
    assert "95% CI" in index and ">1/2<" in index


def test_verify_runs_through_the_local_launcher(results, data_dir):
    outcome = bench("verify", "mnist_fast", "--launcher", "local", "--jobs", "2", "--epochs", "1",
                    "--results-dir", str(results), "--data-dir", str(data_dir))
    assert outcome.exit_code == 0, outcome.output
    assert "2 of 2 jobs done" in outcome.output and outcome.output.count("reproduced exactly") == 2
    for path in records_in(results):
        (verification,) = read_verifications(verification_path(results, path.stem))
        assert verification["verdict"] == "reproduced exactly"
    assert not list(results.glob("*.claim"))


def test_verify_refuses_a_launcher_that_works_on_a_copy(results):
    one_line_error(bench("verify", "mnist_fast", "--launcher", "ray", "--results-dir", str(results)),
                   "--launcher ray: its jobs do not run in the results folder itself")
    one_line_error(bench("verify", "mnist_fast", "--jobs", "2", "--results-dir", str(results)),
                   "--jobs goes with --launcher")
