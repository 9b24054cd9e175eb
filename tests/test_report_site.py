"""bench report: the static site (files, escaping, well-formed HTML, links, rebuilds) and the HTML leaderboard."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
import report_records as rr
from click.testing import CliRunner
from support import ROOT, make_record, write_records

from cnnbench.cli import main
from cnnbench.reports import leaderboard as lb
from cnnbench.reports import render
from cnnbench.reports.plots import FieldPoint, pareto_front
from cnnbench.reports.site import config_labels
from cnnbench.runrecord import read_record

HOSTILE = rr.HOSTILE
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


def bench(*args: str) -> Any:
    return CliRunner().invoke(main, list(args))


class Structure(HTMLParser):
    """Checks what a browser would silently repair: the doctype, every element closed in order, unique ids."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.doctype, self.stack, self.errors, self.ids = False, [], [], Counter()
        self.links: list[str] = []
        self.scripts = 0

    def handle_decl(self, decl: str) -> None:
        self.doctype = self.doctype or decl.lower() == "doctype html"

    def _attrs(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for key, value in attrs:
            if key == "id":
                self.ids[value] += 1
            if key in ("href", "xlink:href", "src") and value:
                self.links.append(value)
        self.scripts += tag == "script"

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._attrs(tag, attrs)
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._attrs(tag, attrs)

    def handle_endtag(self, tag: str) -> None:
        if tag in VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes <{self.stack[-1] if self.stack else None}>")
        else:
            self.stack.pop()


def check_document(text: str) -> Structure:
    parsed = Structure()
    parsed.feed(text)
    parsed.close()
    assert parsed.doctype, "no <!DOCTYPE html>"
    assert not parsed.errors, parsed.errors[:5]
    assert not parsed.stack, f"unclosed: {parsed.stack}"
    assert [k for k, n in parsed.ids.items() if n > 1] == []
    assert parsed.scripts == 1  # ours, the table sorter; nothing a record said
    return parsed


def build(results: Path, out: Path) -> Path:
    res = bench("report", "--results-dir", str(results), "--out", str(out))
    assert res.exit_code == 0, res.output
    assert f"wrote {out / 'index.html'} (9 runs: 6 pages" in res.output
    return out


@pytest.fixture
def results(tmp_path: Path) -> Path:
    rr.small_field(tmp_path / "results")
    return tmp_path / "results"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One report of the small field, read (never changed) by several tests."""
    root = tmp_path_factory.mktemp("report")
    rr.small_field(root / "results")
    return build(root / "results", root / "site")


def test_report_has_an_index_a_page_per_configuration_and_svg_plots(site: Path):
    index = (site / "index.html").read_text()
    pages = sorted(p.name for p in (site / "runs").glob("*.html"))
    assert len(pages) == 5  # mnist_gap, mnist_2block, the hostile one, cifar_3block, cifar_c13
    assert len(list((site / "runs").glob("*-curves.svg"))) == 5
    assert index.count('<figure class="field"><svg') == 2  # one field plot per dataset, inline (its points link)
    assert index.count('class="sortable leaderboard"') == len(render.sections(_rows(site.parent / "results")))
    assert "@media print" in index and "table.sortable" in index
    for target in ("mnist-10k", "cifar10-200k"):
        assert (site / "plots" / f"time-{target}.svg").is_file()
        assert f'src="plots/time-{target}.svg"' in index
    svg = (site / "plots" / "time-mnist-10k.svg").read_text()
    assert svg.startswith("<?xml") and "<text" in svg  # text stays text (svg.fonttype none)
    page = (site / "runs" / next(p for p in pages if p.startswith("mnist_gap"))).read_text()
    for part in ("Seeds", "Curves", "Confusion matrix", "Per-class accuracy", "Recipe", "Machine",
                 "99.453%", '<table class="heat">', "Xeon Platinum 8481C, 2 threads"):
        assert part in page


def _rows(results: Path) -> list[lb.Row]:
    from cnnbench.registry import get_registry

    targets = get_registry().targets()
    return lb.sort_rows(lb.build_rows(lb.group_records(lb.load_records(results)), targets), "acc",
                        [t.id for t in targets])


def test_every_page_is_well_formed_and_escapes_names(site: Path):
    for path in [site / "index.html", *(site / "runs").glob("*.html")]:
        text = path.read_text()
        check_document(text)
        assert HOSTILE not in text and "<b>c0</b>" not in text
    hostile = next((site / "runs").glob("script-alert-1-script-*.html")).read_text()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in hostile and "&lt;b&gt;c0&lt;/b&gt;" in hostile
    field = (site / "index.html").read_text()
    assert "&lt;script&gt;" in field  # in the table; the plot's text is escaped by matplotlib


def test_links_and_images_resolve_to_files(site: Path):
    for path in [site / "index.html", *(site / "runs").glob("*.html")]:
        parsed = check_document(path.read_text())
        for link in parsed.links:
            target, _, fragment = link.partition("#")
            assert not re.match(r"[a-z]+:", target), f"{path.name}: external link {link}"  # no CDN, no server
            file = (path.parent / target).resolve() if target else path
            assert file.is_file(), f"{path.name}: {link} -> {file}"
            if fragment:
                assert f'id="{fragment}"' in file.read_text(), f"{path.name}: {link}"


def test_leaderboard_html_is_a_complete_document_with_the_reports_table(results: Path):
    res = bench("leaderboard", "--results-dir", str(results), "--format", "html")
    assert res.exit_code == 0, res.output
    check_document(res.output)
    assert res.output.startswith("<!DOCTYPE html>") and res.output.rstrip().endswith("</html>")
    assert '<table class="sortable leaderboard">' in res.output and '<h2 id="t-mnist-10k">' in res.output
    assert HOSTILE not in res.output and "&lt;script&gt;alert(1)&lt;/script&gt;" in res.output
    assert 'data-value="7852.0"' in res.output  # numbers sort by value, not text
    empty = bench("leaderboard", "--results-dir", str(results.parent / "none"), "--format", "html")
    check_document(empty.output)
    assert "No runs." in empty.output


def test_rebuild_redraws_only_changed_plots_and_drops_pages_of_gone_runs(results: Path, tmp_path: Path):
    site = build(results, tmp_path / "site")
    gone = next(results.glob("*cifar_c13*.json"))
    gone.unlink()
    res = bench("report", "--results-dir", str(results), "--out", str(site))
    assert res.exit_code == 0, res.output
    assert "8 runs: 5 pages" in res.output and "unchanged" in res.output
    assert not list((site / "runs").glob("cifar_c13-*"))
    assert len(list((site / "runs").glob("*.html"))) == 4


def test_out_must_be_a_report_folder_outside_the_results(results: Path, tmp_path: Path):
    res = bench("report", "--results-dir", str(results), "--out", str(results / "site"))
    assert res.exit_code == 1 and "inside the results folder" in res.output
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    res = bench("report", "--results-dir", str(results), "--out", str(foreign))
    assert res.exit_code == 1 and "not made by bench report" in res.output
    assert (foreign / "notes.txt").read_text() == "keep me"


def test_bad_records_are_skipped_and_weights_without_a_data_dir_leave_a_note(results: Path, tmp_path: Path):
    (results / "half.json").write_text('{"run_id": "x", ')
    path = next(results.glob("*mnist_gap-s0*.json"))
    record = read_record(path)
    path.unlink()
    write_records(results, dataclasses.replace(record, weights=f"{record.run_id}.pt"))
    out = tmp_path / "site"
    res = bench("report", "--results-dir", str(results), "--out", str(out))
    assert res.exit_code == 0 and f"skipping {results / 'half.json'}" in res.stderr
    assert "(9 runs: 6 pages" in res.stdout
    page = next((out / "runs").glob("mnist_gap-*.html")).read_text()
    assert "bench report --data-dir DIR</code> adds the grid" in page
    res = bench("report", "--results-dir", str(results), "--out", str(out), "--data-dir", str(tmp_path / "nope"))
    assert res.exit_code == 0 and "data dir" in res.stderr and "not found" in res.stderr


def test_misclassified_grid_from_committed_weights(tmp_path: Path, data_dir: Path):
    """A committed MNIST run and its weights (scored on its first 1,000 test images, to be quick): the page
    embeds the PNG of the images it gets wrong. The README's screenshot lives in results/: every reader of
    that folder ignores a PNG there."""
    source = ROOT / "results" / "20261123T173053Z-mnist_step2-s0-0dd1f364.json"
    results = tmp_path / "results"
    results.mkdir()
    record = json.loads(source.read_text())
    (results / source.name).write_text(json.dumps({**record, "test_images": 1_000}))
    shutil.copy(source.with_suffix(".pt"), results)
    (results / "report-index.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    out = tmp_path / "site"
    res = bench("report", "--results-dir", str(results), "--out", str(out), "--data-dir", str(data_dir))
    assert res.exit_code == 0, res.output
    [png] = (out / "runs").glob("*-misclassified.png")
    assert png.read_bytes().startswith(b"\x89PNG")
    page = next((out / "runs").glob("mnist_step2-*.html")).read_text()
    assert f'src="{png.name}"' in page and "of 1000 test images are misclassified" in page
    assert "(1 runs: 2 pages" in res.output and res.stderr == ""
    for command in ("leaderboard", "runs"):
        res = bench(command, "--results-dir", str(results))
        assert res.exit_code == 0 and "mnist_step2" in res.output and "png" not in res.output.lower()


def test_report_imports_no_torch_and_help_no_matplotlib(results: Path, tmp_path: Path):
    code = (
        "import sys; from click.testing import CliRunner; from cnnbench.cli import main; "
        "assert 'matplotlib' not in sys.modules; "
        f"r = CliRunner().invoke(main, ['report', '--results-dir', {str(results)!r}, '--out', "
        f"{str(tmp_path / 'site')!r}]); assert r.exit_code == 0, r.output; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'torchvision', 'selenium')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_pareto_front_keeps_points_no_smaller_model_beats():
    def point(params: int, mean: float) -> FieldPoint:
        return FieldPoint(params, mean, mean, mean, str(params), "", False)

    points = [point(5_000, 0.98), point(8_000, 0.97), point(9_000, 0.99), point(20_000, 0.99), point(30_000, 0.995)]
    assert [p.params for p in pareto_front(points)] == [5_000, 9_000, 30_000]


def test_configuration_labels_say_what_differs():
    records = [make_record(), make_record(normalizer="group"), make_record(lr=0.05), make_record(model="mnist_step1")]
    groups = lb.group_records(records)
    labels = config_labels(groups)
    assert len(set(labels)) == 4 and "mnist_step1" in labels
    assert "mnist_gap (group, lr 0.1)" in labels and "mnist_gap (batch, lr 0.05)" in labels


@pytest.mark.benchmark_suite
def test_report_over_a_thousand_records(tmp_path: Path):
    """Cold build, then a rebuild with nothing changed (run with -m benchmark_suite -s to see the times)."""
    rr.thousand(tmp_path / "results")
    times = []
    for _ in range(2):
        started = time.perf_counter()
        res = bench("report", "--results-dir", str(tmp_path / "results"), "--out", str(tmp_path / "site"))
        times.append(time.perf_counter() - started)
        assert res.exit_code == 0, res.output
    print(f"\n1,000 records, 200 configurations: cold {times[0]:.1f}s, unchanged rebuild {times[1]:.1f}s")
    assert len(list((tmp_path / "site" / "runs").glob("*.html"))) == 200
