"""``bench check``: validate every record of a results folder without training anything.

For each record: it parses at the current schema (older ones are upgraded and said to be "not
fingerprinted"); its fingerprints hold (the record's own digest, the weights file present and its
tensors' digest matching); it is consistent with itself (the final accuracy is the last epoch's,
the best is the maximum at the best epoch, the confusion matrix sums to the test images and its
diagonal gives the final accuracy and the per-class accuracies); and no two records claim the same
sweep job or run id. Each problem is one line naming the file.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from cnnbench.files import read_regular
from cnnbench.runrecord import MAX_RECORD_BYTES, RunRecord, is_record_file, read_record, record_digest

ACC_TOLERANCE = 1e-9  # accuracies are count / total, stored as floats


@dataclass
class CheckResult:
    """What ``check_results`` found: problems by file, and the records it read."""

    problems: list[str] = field(default_factory=list)
    checked: int = 0
    fingerprinted: int = 0
    not_fingerprinted: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def check_results(results_dir: Path, weights_digest: Callable[[Path], str] | None = None) -> CheckResult:
    """Check every ``*.json`` record in ``results_dir`` (verification files aside); ``weights_digest``
    (path -> SHA-256 of the tensors) checks fingerprinted weights where given."""
    result = CheckResult()
    claims: dict[str, list[str]] = {}
    for path in sorted(p for p in Path(results_dir).glob("*.json") if is_record_file(p)):
        result.checked += 1
        try:
            record = read_record(path)
        except ValueError as exc:
            result.problems.append(f"{path}: unreadable record: {exc}")
            continue
        if path.stem != record.run_id:
            result.problems.append(f"{path}: its run_id is {record.run_id!r}, not its file name")
        problems = consistency_problems(record) + fingerprint_problems(record, path, weights_digest)
        result.problems.extend(f"{path}: {p}" for p in problems)
        if record.fingerprints:
            result.fingerprinted += 1
        else:
            result.not_fingerprinted.append(record.run_id)
        job = (record.launch or {}).get("job_key")
        if job:
            claims.setdefault(str(job), []).append(path.name)
    for job, files in sorted(claims.items()):
        if len(files) > 1:
            result.problems.append(f"{', '.join(files)}: {len(files)} records claim sweep job {job}")
    return result


def consistency_problems(record: RunRecord) -> list[str]:
    """What does not add up inside one record."""
    problems: list[str] = []
    epochs = record.epochs
    if not epochs:
        return ["no epochs"]
    if record.epochs_run is not None and record.epochs_run != len(epochs):
        problems.append(f"epochs_run is {record.epochs_run} but {len(epochs)} epochs are listed")
    if [e.epoch for e in epochs] != list(range(1, len(epochs) + 1)):
        problems.append("epochs are not numbered 1, 2, 3 ...")
    if not _same(record.final_test_acc, epochs[-1].test_acc):
        problems.append(f"final_test_acc {record.final_test_acc} is not the last epoch's {epochs[-1].test_acc}")
    best = max(e.test_acc for e in epochs)
    if not _same(record.best_test_acc, best):
        problems.append(f"best_test_acc {record.best_test_acc} is not the best epoch's {best}")
    if record.best_epoch is not None and not _same(epochs[record.best_epoch - 1].test_acc if
                                                   0 < record.best_epoch <= len(epochs) else math.nan, best):
        problems.append(f"best_epoch {record.best_epoch} is not an epoch with the best accuracy")
    problems.extend(confusion_problems(record))
    return problems


def confusion_problems(record: RunRecord) -> list[str]:
    matrix = record.confusion
    if matrix is None:
        return []
    total = sum(sum(row) for row in matrix)
    if record.test_images is not None and total != record.test_images:
        return [f"the confusion matrix counts {total} images, the record {record.test_images} test images"]
    if total == 0:
        return ["the confusion matrix is empty"]
    correct = sum(matrix[i][i] for i in range(len(matrix)))
    problems = []
    if not _same(correct / total, record.final_test_acc):
        problems.append(f"the confusion matrix gives accuracy {correct / total:.6f}, "
                        f"final_test_acc says {record.final_test_acc:.6f}")
    for i, (name, acc) in enumerate(record.per_class_acc.items()):
        row = matrix[i] if i < len(matrix) else []
        if row and not math.isclose(row[i] / max(sum(row), 1), acc, abs_tol=1e-6):
            problems.append(f"per-class accuracy of {name!r} is {acc:.6f}, its confusion row gives "
                            f"{row[i] / max(sum(row), 1):.6f}")
            break
    return problems


def fingerprint_problems(record: RunRecord, path: Path, weights_digest: Callable[[Path], str] | None) -> list[str]:
    problems: list[str] = []
    weights = path.parent / record.weights if record.weights else None
    if weights is not None and not weights.is_file():
        problems.append(f"its weights file {record.weights} is missing")
        weights = None
    prints = record.fingerprints
    if not prints:
        return problems
    stored = prints.get("record_sha256")
    if stored is not None and stored != record_digest(json.loads(read_regular(path, MAX_RECORD_BYTES))):
        problems.append("the record was changed after it was written (its digest does not match)")
    expected = prints.get("weights_sha256")
    if weights is not None and expected and weights_digest is not None and weights_digest(weights) != expected:
        problems.append(f"its weights file {record.weights} is not the run's weights (digest differs)")
    return problems


def _same(a: float | None, b: float | None) -> bool:
    return a is not None and b is not None and abs(float(a) - float(b)) <= ACC_TOLERANCE
