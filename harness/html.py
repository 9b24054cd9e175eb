"""HTML building blocks shared by ``bench leaderboard --format html`` and ``bench report``.

One sortable table component, one page shell (inline CSS with a print style, a few lines of plain
JavaScript that sort a table when its header is clicked; every page reads the same without it).
Every string that comes from a record or a plugin goes through ``esc``: names are third-party input.
Pure Python (no matplotlib, no torch).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from html import escape
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .leaderboard import Group, Row


def esc(value: Any) -> str:
    """``value`` as HTML text or attribute value (``<``, ``&`` and both quotes escaped)."""
    return escape(str(value), quote=True)


def anchor(text: str) -> str:
    """A stable, safe ``id`` for ``text`` (letters, digits, ``-``, ``_``, ``.``)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "x"


@dataclass(frozen=True)
class Cell:
    """One table cell: its text, an optional numeric sort key (``data-value``), link and CSS class."""

    text: Any
    value: float | None = None
    href: str | None = None
    cls: str = ""
    swatch: str = ""  # a colour shown as a small square before the text (our palette, never record data)


def _cell(cell: Cell | Any) -> str:
    if not isinstance(cell, Cell):
        cell = Cell(cell)
    attrs = ""
    classes = cell.cls
    if cell.value is not None and math.isfinite(cell.value):
        attrs += f' data-value="{cell.value!r}"'
        classes = f"{classes} num".strip()
    if classes:
        attrs += f' class="{esc(classes)}"'
    text = esc(cell.text)
    if cell.href:
        text = f'<a href="{esc(cell.href)}">{text}</a>'
    if cell.swatch:
        text = f'<span class="swatch" style="background:{esc(cell.swatch)}"></span>{text}'
    return f"<td{attrs}>{text}</td>"


def table(headers: Sequence[str], rows: Iterable[Sequence[Cell | Any]], *, sortable: bool = True, cls: str = "") -> str:
    """A ``<table>`` whose headers sort it when clicked (with JavaScript); cells are escaped."""
    classes = " ".join(c for c in ("sortable" if sortable else "", cls) if c)
    attrs = f' class="{classes}"' if classes else ""
    head = "".join(f'<th scope="col">{esc(h)}</th>' for h in headers)
    body = "\n".join("<tr>" + "".join(_cell(c) for c in row) + "</tr>" for row in rows)
    return (f'<div class="table-wrap"><table{attrs}>\n<thead><tr>{head}</tr></thead>\n'
            f"<tbody>\n{body}\n</tbody></table></div>\n")


def pairs_table(pairs: Iterable[tuple[Any, Any]]) -> str:
    """A two-column key/value table (not sortable); ``None`` values are left out."""
    body = "\n".join(f'<tr><th scope="row">{esc(k)}</th><td>{esc(v)}</td></tr>' for k, v in pairs if v is not None)
    return f'<div class="table-wrap"><table class="facts"><tbody>\n{body}\n</tbody></table></div>\n'


# --- the leaderboard table ----------------------------------------------------------------

# numeric sort keys of the leaderboard columns, by header name (a column not named here sorts as text)
_SORT_KEYS: dict[str, Callable[[dict[str, Any]], Any]] = {
    "n": lambda d: d["n"],
    "final mean": lambda d: d["final_mean"],
    "std": lambda d: d["final_std"],
    "min": lambda d: d["final_min"],
    "best epoch": lambda d: d["best_epoch_mean"],
    "reached": lambda d: d["reached_epoch"],
    "time": lambda d: d["time_to_target_s"],
    "params": lambda d: d["params"],
    "epochs": lambda d: d["epochs"],
    "img/s": lambda d: d["images_per_s"],
}


def status_class(status: str) -> str:
    """CSS class of a leaderboard status: ``pass``, ``near`` (best epoch only) or ``fail``."""
    from .leaderboard import BEST_ONLY, PASS

    return {PASS: "pass", BEST_ONLY: "near"}.get(status, "fail" if status.startswith("fail") else "other")


def leaderboard_cells(row: Row, link: Callable[[Group], str | None] | None = None) -> list[Cell]:
    """One leaderboard row as cells: the text of ``display_cells``, numbers sortable, the model linked."""
    from .leaderboard import HEADERS, display_cells

    d = row.as_dict()
    cells = []
    for header, text in zip(HEADERS, display_cells(row), strict=True):
        key = _SORT_KEYS.get(header)
        value = key(d) if key else None
        if header == "status":
            cells.append(Cell(text, None, cls=f"status {status_class(str(text))}"))
            continue
        href = link(row.group) if link and header == "model" else None
        cells.append(Cell(text, float(value) if isinstance(value, int | float) else None, href))
    return cells


def section_id(title: str) -> str:
    return "t-" + anchor(title.split(" ", 1)[0])


def leaderboard_tables(rows: list[Row], heading_level: int = 2,
                       link: Callable[[Group], str | None] | None = None,
                       after: Callable[[Row], str] | None = None) -> str:
    """Each target's section: a heading and its sortable table (``after(first row)`` may add HTML below)."""
    from .leaderboard import HEADERS, sections

    parts = []
    h = f"h{heading_level}"
    for title, section in sections(rows):
        parts.append(f'<{h} id="{section_id(title)}">{esc(title)}</{h}>\n')
        parts.append(table(HEADERS, [leaderboard_cells(r, link) for r in section], cls="leaderboard"))
        if after:
            parts.append(after(section[0]))
    return "".join(parts)


def leaderboard_document(rows: list[Row], heading_level: int = 2) -> str:
    """``bench leaderboard --format html``: a complete page with one table per target and the rule."""
    from .leaderboard import footer

    body = leaderboard_tables(rows, heading_level) if rows else "<p>No runs.</p>\n"
    return page("cnnbench leaderboard", "<h1>cnnbench leaderboard</h1>\n" + body + footer("html"))


# --- the page shell -------------------------------------------------------------------------

CSS = """
:root { --fg: #1b1f24; --muted: #59636e; --line: #d0d7de; --pass: #1a7f37; --near: #9a6700; --fail: #b42318; }
* { box-sizing: border-box; }
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; color: var(--fg);
       margin: 0 auto; padding: 1rem 1.5rem 3rem; max-width: 1280px; }
h1 { font-size: 1.6rem; margin: .4rem 0 .2rem; } h2 { font-size: 1.3rem; margin-top: 2rem;
     border-bottom: 1px solid var(--line); padding-bottom: .2rem; } h3 { font-size: 1.05rem; margin-top: 1.6rem; }
nav { font-size: .9rem; padding: .4rem 0; border-bottom: 1px solid var(--line); }
nav a { margin-right: 1rem; }
a { color: #0969da; }
.muted, .rule, figcaption { color: var(--muted); font-size: .85rem; }
.table-wrap { overflow-x: auto; margin: .4rem 0 1rem; }
table { border-collapse: collapse; font-size: .82rem; }
th, td { padding: .25rem .5rem; border-bottom: 1px solid var(--line); text-align: left; vertical-align: top;
         white-space: nowrap; }
table.facts td { white-space: normal; }
thead th { background: #f6f8fa; position: sticky; top: 0; white-space: nowrap; }
table.sortable thead th { cursor: pointer; user-select: none; }
table.sortable thead th[aria-sort="ascending"]::after { content: " \\25B2"; }
table.sortable thead th[aria-sort="descending"]::after { content: " \\25BC"; }
tbody tr:nth-child(even) { background: #fafbfc; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.status { font-weight: 600; white-space: nowrap; } .pass { color: var(--pass); } .near { color: var(--near); }
.fail { color: var(--fail); } .other { color: var(--muted); }
table.facts th { font-weight: 500; color: var(--muted); white-space: nowrap; }
figure { margin: .6rem 0 1.2rem; } figure svg, figure img { max-width: 100%; height: auto; display: block; }
figure.field svg, figure.wide img { width: 100%; max-width: 1100px; }
table.heat td { text-align: right; min-width: 2.6em; font-variant-numeric: tabular-nums; }
table.heat, table.heat td, table.heat th { print-color-adjust: exact; -webkit-print-color-adjust: exact; }
.swatch { display: inline-block; width: .8em; height: .8em; border-radius: 2px; margin-right: .3em;
          vertical-align: -.05em; print-color-adjust: exact; -webkit-print-color-adjust: exact; }
.summary { font-size: 1.05rem; }
@media print {
  body { max-width: none; padding: 0; font-size: 10pt; }
  nav, .no-print { display: none; }
  a { color: inherit; text-decoration: none; }
  thead th { position: static; }
  table.sortable thead th::after { content: none; }
  .table-wrap { overflow: visible; }
  th, td { white-space: normal; }
  table { font-size: 7.5pt; }
  h2 { break-before: auto; break-after: avoid; } h3 { break-after: avoid; }
  figure, tr { break-inside: avoid; }
}
"""

# Sorts a table when its header is clicked (or Enter/space on it): numbers by data-value, else text;
# cells without a value go last. The page is complete without it.
SCRIPT = """
(function () {
  function key(cell) { var v = cell.getAttribute("data-value"); return v === null ? null : parseFloat(v); }
  function compare(a, b, asc) {
    var x = key(a), y = key(b), d;
    if (x === null && y === null) {
      d = a.textContent.trim().localeCompare(b.textContent.trim(), undefined, {numeric: true});
    } else if (x === null || y === null) { return x === null ? 1 : -1; } else { d = x - y; }
    return asc ? d : -d;
  }
  document.querySelectorAll("table.sortable").forEach(function (table) {
    var heads = table.querySelectorAll("thead th");
    heads.forEach(function (th, col) {
      function sort() {
        var asc = th.getAttribute("aria-sort") !== "ascending", body = table.tBodies[0];
        heads.forEach(function (h) { h.removeAttribute("aria-sort"); });
        th.setAttribute("aria-sort", asc ? "ascending" : "descending");
        Array.prototype.slice.call(body.rows)
          .sort(function (r, s) { return compare(r.cells[col], s.cells[col], asc); })
          .forEach(function (r) { body.appendChild(r); });
      }
      th.tabIndex = 0;
      th.title = "sort by " + th.textContent;
      th.addEventListener("click", sort);
      th.addEventListener("keydown", function (e) {
        if (e.key === "Enter" || e.key === " ") { e.preventDefault(); sort(); }
      });
    });
  });
})();
"""


def page(title: str, body: str, nav: Sequence[tuple[str, str]] = ()) -> str:
    """A complete HTML document: ``title`` (escaped here), ``body`` (HTML, escaped by the caller), inline CSS/JS."""
    links = "".join(f'<a href="{esc(href)}">{esc(text)}</a>' for text, href in nav)
    nav_html = f"<nav>{links}</nav>\n" if links else ""
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        '<meta name="generator" content="cnnbench">\n'
        f"<title>{esc(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n{nav_html}<main>\n{body}</main>\n"
        f"<script>{SCRIPT}</script>\n</body>\n</html>\n"
    )
