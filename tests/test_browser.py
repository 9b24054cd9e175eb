"""The report in a real browser: headless Chromium (Debian's ``chromium`` + ``chromium-driver``) via Selenium.

Skipped, saying how to install it, where Chromium, its driver or selenium is missing; ``.ci/install``
installs all three, so CI runs it. One browser serves every test here (a few seconds in all).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
import report_records as rr
from click.testing import CliRunner

from cnnbench.cli import main
from cnnbench.reports import browser

pytestmark = pytest.mark.skipif(
    browser.missing() is not None,
    reason=f"headless Chromium not available ({browser.missing()}): {browser.INSTALL_HINT}",
)

# every link target of a page, HTML <a> and the SVG points' <a xlink:href> alike, and every image source
LINKS = """
return Array.from(document.querySelectorAll('a')).map(a => a.getAttribute('href') ||
         a.getAttributeNS('http://www.w3.org/1999/xlink', 'href'))
       .concat(Array.from(document.querySelectorAll('img')).map(i => i.getAttribute('src')));
"""


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("browser")
    rr.small_field(root / "results")
    res = CliRunner().invoke(main, ["report", "--results-dir", str(root / "results"), "--out", str(root / "site")])
    assert res.exit_code == 0, res.output
    return root / "site"


@pytest.fixture(scope="module")
def driver(tmp_path_factory: pytest.TempPathFactory) -> Any:
    with browser.chromium(tmp_path_factory.mktemp("chromium-profile"), width=1280, height=1000) as d:
        yield d


def open_page(driver: Any, path: Path) -> None:
    driver.get(path.resolve().as_uri())
    assert driver.execute_script("return document.readyState") == "complete"


def column(driver: Any, table: Any, header: str) -> list[float]:
    """The numeric sort values of one column, top to bottom, as the DOM has them now."""
    return driver.execute_script(
        "const [t, h] = arguments; const i = Array.from(t.tHead.rows[0].cells).findIndex(c => c.textContent"
        ".trim().replace(/[\\u25B2\\u25BC]/g, '').trim() === h);"
        "return Array.from(t.tBodies[0].rows).map(r => parseFloat(r.cells[i].dataset.value));", table, header)


def test_index_has_the_tables_and_plots(driver: Any, site: Path):
    open_page(driver, site / "index.html")
    assert driver.title == "cnnbench report"
    tables = driver.find_elements("css selector", "table.leaderboard")
    assert tables and all(t.find_elements("css selector", "tbody tr") for t in tables)
    headings = [h.text for h in driver.find_elements("css selector", "section h3")]
    assert any(h.startswith("mnist-10k (mnist)") for h in headings)
    assert any(h.startswith("cifar10-200k (cifar10)") for h in headings)
    plots = driver.find_elements("css selector", "figure.field svg")
    assert len(plots) == 2 and all(p.size["width"] > 600 and p.size["height"] > 200 for p in plots)
    points = driver.find_elements("css selector", "figure.field svg a")
    assert len(points) == 5  # one link per configuration not run on a data subset
    images = driver.find_elements("css selector", "figure img")
    assert images and all(driver.execute_script("return arguments[0].naturalWidth", i) > 300 for i in images)


def test_clicking_a_header_sorts_its_table(driver: Any, site: Path):
    open_page(driver, site / "index.html")
    table = driver.find_element("css selector", "#d-mnist table.leaderboard")
    before = column(driver, table, "params")
    assert len(before) >= 3 and before != sorted(before)  # the leaderboard's own order: passes first
    header = next(h for h in table.find_elements("css selector", "thead th") if h.text == "params")
    header.click()
    assert column(driver, table, "params") == sorted(before)
    assert header.get_attribute("aria-sort") == "ascending"
    header.click()
    assert column(driver, table, "params") == sorted(before, reverse=True)
    model = next(h for h in table.find_elements("css selector", "thead th") if h.text == "model")
    model.click()
    names = [r.find_elements("css selector", "td")[1].text for r in table.find_elements("css selector", "tbody tr")]
    assert names == sorted(names, key=str.lower) or names == sorted(names)


def test_links_resolve_to_existing_files(driver: Any, site: Path):
    pages = [site / "index.html", *sorted((site / "runs").glob("*.html"))]
    assert len(pages) == 6
    for page in pages:
        open_page(driver, page)
        links = driver.execute_script(LINKS)
        assert links, page
        for link in links:
            target, _, fragment = link.partition("#")
            file = (page.parent / target).resolve() if target else page
            assert file.is_file(), f"{page.name}: {link}"
            if fragment and file == page:
                assert driver.find_elements("id", fragment), f"{page.name}: #{fragment}"


def test_a_name_with_a_script_tag_renders_as_text(driver: Any, site: Path):
    [page] = (site / "runs").glob("script-alert-1-script-*.html")
    open_page(driver, page)
    assert driver.find_element("tag name", "h1").text.startswith("<script>alert(1)</script>")
    assert len(driver.find_elements("tag name", "script")) == 1  # the sorter; the name made none
    assert "<b>c0</b>" in driver.find_element("id", "confusion").text
    assert not driver.find_elements("css selector", "#confusion b")
    open_page(driver, site / "index.html")
    assert len(driver.find_elements("tag name", "script")) == 1
    assert "<script>alert(1)</script>" in driver.find_element("tag name", "main").text


def test_screenshot_is_not_blank(driver: Any, site: Path):
    from PIL import Image

    open_page(driver, site / "index.html")
    image = Image.open(io.BytesIO(driver.get_screenshot_as_png())).convert("RGB")
    assert image.width >= 1000 and image.height >= 600
    colours = image.getcolors(maxcolors=1 << 16)
    assert colours is None or len(colours) > 50  # text, plot, tables: not a blank page
    white = max(count for count, _ in colours) / (image.width * image.height) if colours else 0
    assert white < 0.97


def test_print_style_and_no_javascript(driver: Any, site: Path):
    import base64

    open_page(driver, site / "index.html")
    rows = len(driver.find_elements("css selector", "table.leaderboard tbody tr"))
    driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {"media": "print"})
    try:
        assert not driver.find_element("tag name", "nav").is_displayed()  # the print style hides navigation
    finally:
        driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {"media": ""})
    assert base64.b64decode(driver.print_page()).startswith(b"%PDF")
    driver.execute_cdp_cmd("Emulation.setScriptExecutionDisabled", {"value": True})
    try:
        open_page(driver, site / "index.html")
        assert len(driver.find_elements("css selector", "table.leaderboard tbody tr")) == rows
        assert driver.find_elements("css selector", "figure.field svg a")
        assert driver.find_element("css selector", "table.leaderboard th").get_attribute("tabindex") is None
    finally:
        driver.execute_cdp_cmd("Emulation.setScriptExecutionDisabled", {"value": False})
