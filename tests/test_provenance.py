"""Where a run record's git commit comes from."""

from __future__ import annotations

from pathlib import Path

from support import ROOT

from cnnbench.training import provenance


def test_commit_from_the_checkout_ignores_the_environment(monkeypatch) -> None:
    monkeypatch.setenv("CNNBENCH_GIT_COMMIT", "0" * 40)
    git = provenance.git_commit(ROOT)
    assert git["commit"] != "0" * 40 and len(git["commit"]) == 40
    assert "from" not in git


def test_copy_without_git_takes_the_commit_from_the_environment(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CNNBENCH_GIT_COMMIT", "a" * 40)
    assert provenance.git_commit(tmp_path) == {"commit": "a" * 40, "dirty": None, "from": "environment"}


def test_unreadable_git_takes_the_commit_from_the_environment(monkeypatch) -> None:
    monkeypatch.setenv("GIT_DIR", "/nonexistent")
    monkeypatch.setenv("CNNBENCH_GIT_COMMIT", "b" * 40)
    assert provenance.git_commit(ROOT)["commit"] == "b" * 40


def test_copy_without_git_or_environment_records_no_commit(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.delenv("CNNBENCH_GIT_COMMIT", raising=False)
    assert provenance.git_commit(tmp_path) == {"commit": None, "dirty": None}
