"""bench report and bench leaderboard under bad inputs and faults: a full disk, hostile text in every field of a
record, FIFOs where files should be, links and files where folders should be, a confusion matrix that is not
square. Each one ends in a whole site or one line and a non-zero exit, never a traceback or a hang."""

from __future__ import annotations

import dataclasses
import errno
import os
import subprocess
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from support import BENCH, make_record, write_records

from cnnbench import files
from cnnbench.cli import main
from cnnbench.cli import reports as cli_reports
from cnnbench.errors import DataError
from cnnbench.runrecord import RunRecord

# escapes HTML, starts Jinja2 syntax, and closes quotes: must come out as the text it is, everywhere
HOSTILE = "<script>alert(1)</script><img src=x onerror=alert(2)>{{ 7*7 }}{% if 1 %}jinja{% endif %}\"'&amp;"
HOSTILE_FILE = "<img src=x onerror=alert(3)>.pt"  # a weights file name: no slash, so a valid one


def bench(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


def one_line_error(result: Result, *fragments: str) -> str:
    """The command failed with exactly one line, ``error: ...``, naming each of ``fragments``."""
    lines = result.output.strip().splitlines()
    assert result.exit_code != 0 and len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert all(f in lines[0] for f in fragments), lines[0]
    return lines[0]


def no_temporary_files(root: Path) -> None:
    assert [p for p in root.rglob("*") if p.name.endswith(".tmp") or p.name.endswith(".lock")] == []


class Page(HTMLParser):
    """Every element and attribute of a page, and its text (SVG plots included: matplotlib writes them)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.attributes: list[tuple[str, str]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attributes += [(k, v or "") for k, v in attrs]

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse(text: str) -> Page:
    page = Page()
    page.feed(text)
    page.close()
    return page


def assert_inert(text: str) -> str:
    """The hostile text made no element and no attribute: one script (ours), no ``onerror``, no ``src=x``.
    Returns the page's text."""
    page = parse(text)
    assert page.tags.count("script") == 1
    assert not any(k == "onerror" or (k == "src" and v == "x") for k, v in page.attributes)
    return "".join(page.text)


# --- a full disk ---------------------------------------------------------------------------------


@pytest.fixture
def full_disk(monkeypatch: pytest.MonkeyPatch) -> Callable[[str], None]:
    """``full_disk(part)``: every later write of a file whose name contains ``part`` fails with ENOSPC
    (after its temporary file was made, as on a real disk); other files are written."""
    real_fill = files._fill

    def fill_up(part: str) -> None:
        def fill(fd: int, tmp: str, data: bytes) -> None:
            if part in Path(tmp).name:
                os.close(fd)
                raise OSError(errno.ENOSPC, "No space left on device", tmp)
            real_fill(fd, tmp, data)

        monkeypatch.setattr(files, "_fill", fill)

    return fill_up


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize("part", ["-curves.svg", ".html", "index.html", "time-mnist"])
def test_a_full_disk_is_one_line_and_leaves_every_file_whole(tmp_path: Path, full_disk: Callable[[str], None],
                                                             part: str):
    """A rebuild with a new seed changes plots and pages; the disk fills while writing one kind of them.
    Every file is then either as the first build wrote it or whole and new; nothing half-written."""
    results, out = tmp_path / "results", tmp_path / "site"
    write_records(results, make_record(seed=0, accs=[0.99, 0.995]), make_record(model="mnist_step1", seed=0))
    assert bench("report", "--results-dir", str(results), "--out", str(out)).exit_code == 0
    before = snapshot(out)
    write_records(results, make_record(seed=1, accs=[0.99, 0.996]))
    full_disk(part)
    result = bench("report", "--results-dir", str(results), "--out", str(out))
    failed = one_line_error(result, "No space left on device", str(out))
    assert part in failed.split(":")[1]  # the file it could not write, by name
    no_temporary_files(out)
    after = snapshot(out)
    assert set(after) == set(before)  # a page or plot that could not be written is not there half-written
    for name, data in after.items():
        if part in name:
            assert data == before[name], f"{name} was replaced although its write failed"
        if name.endswith(".html"):
            assert data.rstrip().endswith(b"</html>")


def test_a_full_disk_while_saving_a_misclassified_grid_is_an_error_not_a_note(
        tmp_path: Path, full_disk: Callable[[str], None], monkeypatch: pytest.MonkeyPatch):
    """The grid's PNG is written like every other file; a disk that fills there fails the build (before, the
    error was taken for a grid that cannot be made: a note, exit 0)."""
    results = tmp_path / "results"
    write_records(results, make_record(weights="w.pt"))

    def make(record: RunRecord, out: Path) -> str:
        files.write_atomic(out, b"\x89PNG\r\n\x1a\n")
        return "drawn"

    monkeypatch.setattr(cli_reports, "_misclassified_maker", lambda *args: make)
    full_disk("-misclassified.png")
    result = bench("report", "--results-dir", str(results), "--out", str(tmp_path / "site"),
                   "--data-dir", str(tmp_path))
    one_line_error(result, "-misclassified.png: No space left on device")
    no_temporary_files(tmp_path / "site")
    assert not list((tmp_path / "site").rglob("*.png"))


def test_a_grid_that_cannot_be_made_is_still_a_note(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    results = tmp_path / "results"
    write_records(results, make_record(weights="w.pt"))

    def make(record: RunRecord, out: Path) -> str:
        raise DataError(f"no MNIST files in {tmp_path}")

    monkeypatch.setattr(cli_reports, "_misclassified_maker", lambda *args: make)
    result = bench("report", "--results-dir", str(results), "--out", str(tmp_path / "site"),
                   "--data-dir", str(tmp_path))
    assert result.exit_code == 0, result.output
    assert f"note: mnist_gap: no misclassified grid (no MNIST files in {tmp_path})" in result.stderr
    page = next((tmp_path / "site" / "runs").glob("mnist_gap-*.html")).read_text()
    assert f"<p>Skipped: no MNIST files in {tmp_path}</p>" in page


# --- hostile records --------------------------------------------------------------------------------


def hostile_record(**fields: Any) -> RunRecord:
    """A record with ``HOSTILE`` in every text it carries: names, recipe, machine, versions, classes ..."""
    record = make_record(model=HOSTILE, classes=[f"{HOSTILE} {i}" for i in range(10)], **fields)
    return dataclasses.replace(
        record, normalizer=HOSTILE, augmentation=HOSTILE, loader=HOSTILE, device=f"cpu:{HOSTILE}", command=HOSTILE,
        source=HOSTILE, created=HOSTILE, stopped_by=HOSTILE, weights=HOSTILE_FILE,
        recipe={**record.recipe, HOSTILE: HOSTILE, "optimizer": HOSTILE},
        machine={"cpu": HOSTILE, HOSTILE: HOSTILE}, versions={HOSTILE: HOSTILE}, git={HOSTILE: HOSTILE},
        plugins={"model": {"plugin": HOSTILE, "distribution": HOSTILE, "version": HOSTILE}},
        launch={HOSTILE: HOSTILE}, fast_path={"compile": HOSTILE},
    )


@pytest.fixture
def hostile_results(tmp_path: Path) -> Path:
    results = tmp_path / "results"
    write_records(results, hostile_record(seed=0), hostile_record(seed=1, accs=[0.98, 0.99, 0.994]),
                  make_record(model="mnist_step1", params=10_970))
    return results


def test_hostile_text_in_every_field_reads_as_text_on_every_page(hostile_results: Path, tmp_path: Path):
    out = tmp_path / "site"
    result = bench("report", "--results-dir", str(hostile_results), "--out", str(out))
    assert result.exit_code == 0, result.output
    pages = {p.name: assert_inert(p.read_text()) for p in [out / "index.html", *(out / "runs").glob("*.html")]}
    assert len(pages) == 3
    assert HOSTILE in pages["index.html"]  # in the table and the field plot's labels, as text
    [hostile] = [text for name, text in pages.items() if name.startswith("script-alert-1-script-img")]
    for shown in (f"{HOSTILE} 3", f"cpu:{HOSTILE}", f"git.{HOSTILE}", f"{HOSTILE} lr 0.1", f"compile {HOSTILE}"):
        assert shown in hostile, shown  # a class, the device, the git facts, the recipe, the precision


def test_hostile_text_in_every_field_reads_as_text_in_the_html_leaderboard(hostile_results: Path):
    result = bench("leaderboard", "--results-dir", str(hostile_results), "--format", "html")
    assert result.exit_code == 0, result.output
    assert HOSTILE in assert_inert(result.stdout)


def test_a_confusion_matrix_that_is_not_square_still_makes_a_page(tmp_path: Path):
    """A record may hold any integer rows: here two rows of twelve for ten classes (an IndexError before)."""
    results, out = tmp_path / "results", tmp_path / "site"
    write_records(results, make_record(confusion=[[5] * 12, [1] * 12]), make_record(seed=1, confusion=[[1]]))
    result = bench("report", "--results-dir", str(results), "--out", str(out))
    assert result.exit_code == 0, result.output
    page = next((out / "runs").glob("mnist_gap-*.html")).read_text()
    heat = page[page.index('<table class="heat">'):]
    head = heat[:heat.index("</thead>")]
    assert head.count('<th scope="col">') == 13 and '<th scope="col">11</th>' in head
    assert "summed over 1 seed(s)" in page  # the other seed's matrix has another shape


# --- FIFOs, links and files where the report expects something else ----------------------------------


def run_bench(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """``bench`` in a process of its own: a read that blocks fails the test instead of hanging the suite."""
    return subprocess.run([str(BENCH), *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def fifo_results(tmp_path: Path) -> Path:
    results = tmp_path / "results"
    write_records(results, make_record())
    os.mkfifo(results / "zz-a-fifo.json")
    return results


@pytest.mark.parametrize("command", ["leaderboard", "report"])
def test_a_fifo_named_json_in_the_results_is_skipped_not_read(fifo_results: Path, tmp_path: Path, command: str):
    args = ["--out", str(tmp_path / "site")] if command == "report" else []
    done = run_bench(command, "--results-dir", str(fifo_results), *args)
    assert done.returncode == 0, done.stderr
    assert "mnist_gap" in done.stdout or "1 runs" in done.stdout
    assert "Traceback" not in done.stderr and "zz-a-fifo.json" in done.stderr


def test_fifos_in_the_report_folder_are_replaced_not_read(tmp_path: Path):
    """A FIFO where the previous build left the index or a plot: read as 'changed' (never opened for a
    blocking read) and replaced by the file."""
    results, out = tmp_path / "results", tmp_path / "site"
    write_records(results, make_record())
    assert bench("report", "--results-dir", str(results), "--out", str(out)).exit_code == 0
    [curves] = (out / "runs").glob("*-curves.svg")
    for path in (out / "index.html", curves):
        path.unlink()
        os.mkfifo(path)
    done = run_bench("report", "--results-dir", str(results), "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert (out / "index.html").is_file() and curves.is_file() and curves.read_text().startswith("<?xml")


def test_an_out_that_links_to_the_results_folder_is_refused(tmp_path: Path):
    results = tmp_path / "results"
    write_records(results, make_record())
    (tmp_path / "site").symlink_to(results)
    result = bench("report", "--results-dir", str(results), "--out", str(tmp_path / "site"))
    one_line_error(result, "is inside the results folder")
    assert sorted(p.suffix for p in results.iterdir()) == [".json"]


@pytest.mark.parametrize("kind", ["link", "file"])
def test_a_report_subfolder_that_is_a_link_or_a_file_is_refused(tmp_path: Path, kind: str):
    """``runs`` linked elsewhere would have the build write there and delete the pages it did not make."""
    results, out, elsewhere = tmp_path / "results", tmp_path / "site", tmp_path / "mine"
    write_records(results, make_record())
    assert bench("report", "--results-dir", str(results), "--out", str(out)).exit_code == 0
    elsewhere.mkdir()
    (elsewhere / "notes.html").write_text("keep me")
    for path in (out / "runs").iterdir():
        path.unlink()
    (out / "runs").rmdir()
    if kind == "link":
        (out / "runs").symlink_to(elsewhere)
    else:
        (out / "runs").write_text("a file")
    result = bench("report", "--results-dir", str(results), "--out", str(out))
    one_line_error(result, f"{out / 'runs'} is not a folder bench report made")
    assert [p.name for p in elsewhere.iterdir()] == ["notes.html"]


@pytest.mark.parametrize("kind", ["file", "fifo", "under a file"])
def test_an_out_that_is_not_a_folder_is_one_line(tmp_path: Path, kind: str):
    results = tmp_path / "results"
    write_records(results, make_record())
    out = tmp_path / "site"
    if kind == "file":
        out.write_text("mine")
    elif kind == "fifo":
        os.mkfifo(out)
    else:
        (tmp_path / "file").write_text("mine")
        out = tmp_path / "file" / "site"
    result = bench("report", "--results-dir", str(results), "--out", str(out))
    one_line_error(result, str(out))
    no_temporary_files(tmp_path)
