"""The leaderboard rendered: plain and markdown tables, CSV, JSON, an HTML page, and the generated files.

The rows come from ``cnnbench.reports.leaderboard`` (grouping and target arithmetic); this module only
presents them. Pure Python (tabulate, no torch).
"""

from __future__ import annotations

import csv
import io
import json
import textwrap
from collections.abc import Callable
from dataclasses import dataclass

from tabulate import tabulate

from cnnbench.errors import UsageError
from cnnbench.formatting import TABLEFMT, pct, seconds_text
from cnnbench.records import Target
from cnnbench.reports.html import Cell, anchor, page
from cnnbench.reports.leaderboard import BEST_ONLY, END, FORMATS, PASS, PROVISIONAL, ROW_FIELDS, RULE, START, Group, Row
from cnnbench.runrecord import precision_text

# --- rendering ------------------------------------------------------------------------

HEADERS = [
    "status", "model", "normalizer", "aug", "loader", "prec", "recipe", "n", "final mean", "std", "95% CI", "p",
    "min", "best epoch", "reached", "time", "wall", "params", "epochs", "img/s", "verified", "hardware",
]


def display_cells(row: Row) -> list[str | int]:
    d = row.as_dict()
    return [
        d["status"], d["model"], d["normalizer"], d["augmentation"], d["loader"], precision_text(row.group.first),
        d["recipe"],
        # three digits for the mean the pass mark rests on: 99.396% must not read as 99.40%
        d["n"], pct(d["final_mean"], 3), pct(d["final_std"]), interval_text(d["final_ci95_low"], d["final_ci95_high"]),
        "-" if d["p_reaching_target"] is None else f"{d['p_reaching_target']:.3g}",
        pct(d["final_min"]), pct(d["best_epoch_mean"]),
        "-" if d["reached_epoch"] is None else d["reached_epoch"], seconds_text(d["time_to_target_s"]),
        seconds_text(d["wall_s_median"]),
        f"{d['params']:,}", d["epochs"], speed_text(d["images_per_s"], d["device_shared_by"], d["fused_seeds"]),
        f"{d['verified']}/{d['n']}", d["hardware"],
    ]


def interval_text(low: float | None, high: float | None) -> str:
    """``99.38-99.46%`` (percent, two decimals); ``-`` without one (a single seed)."""
    if low is None or high is None:
        return "-"
    return f"{100 * low:.2f}-{100 * high:.2f}%"


def speed_text(speed: float | None, shared_by: int | None, fused: int | None = None) -> str:
    """img/s; ``(shared 4)`` when the runs shared their device with other cnnbench jobs."""
    if speed is None:
        return "-"
    return f"{speed:,.0f}" + (f" (shared {shared_by})" if shared_by and shared_by > 1 else "") + (
        f" (fused {fused})" if fused and fused > 1 else "")


def sections(rows: list[Row]) -> list[tuple[str, list[Row]]]:
    """Rows split by target (rows already sorted so each target's rows are together)."""
    out: list[tuple[str, list[Row]]] = []
    for row in rows:
        title = (
            f"{row.target.id} ({row.target.dataset}): {row.target.rule()}; {row.target.source}"
            if row.target else f"{row.group.first.dataset}: no target"
        )
        if not out or out[-1][0] != title:
            out.append((title, []))
        out[-1][1].append(row)
    return out


def render(rows: list[Row], fmt: str = "table", heading_level: int = 2) -> str:
    """The leaderboard as text in ``fmt`` (one of ``FORMATS``)."""
    if fmt not in FORMATS:
        raise UsageError(f"unknown format {fmt!r}; valid formats: {', '.join(FORMATS)}")
    if fmt == "json":
        return json.dumps({"rule": RULE, "rows": [r.as_dict() for r in rows]}, indent=1) + "\n"
    if fmt == "csv":
        buf = io.StringIO()
        dicts = [r.as_dict() for r in rows]
        writer = csv.DictWriter(buf, fieldnames=ROW_FIELDS, lineterminator="\n")
        writer.writeheader()
        for d in dicts:
            writer.writerow({k: ";".join(map(str, v)) if isinstance(v, list) else v for k, v in d.items()})
        return buf.getvalue()
    if fmt == "html":  # a complete page built from the same table component as `bench report`
        return leaderboard_document(rows, heading_level)

    tablefmt = TABLEFMT[fmt]
    if not rows:
        return "No runs.\n\n" + footer(fmt)
    parts = []
    for title, section in sections(rows):
        table = tabulate([display_cells(r) for r in section], headers=HEADERS, tablefmt=tablefmt,
                         disable_numparse=True)
        if fmt == "markdown":
            parts.append(f"{'#' * heading_level} {title}\n\n{table}\n")
        else:
            parts.append(f"{title}\n\n{table}\n")
    return "\n".join(parts) + "\n" + footer(fmt)


def footer(fmt: str) -> str:
    return textwrap.fill(RULE, 110) + "\n" if fmt == "table" else f"*{RULE}*\n"


# --- generated files --------------------------------------------------------------------


def leaderboard_markdown(rows: list[Row]) -> str:
    """Content of ``results/LEADERBOARD.md`` (deterministic: no dates, stable order)."""
    return (
        "# Leaderboard\n\n"
        "Generated from the run records in `results/` by `bench leaderboard --write`; do not edit by hand.\n\n"
        + render(rows, "markdown", heading_level=2)
    )


def readme_section(rows: list[Row]) -> str:
    """The text between the README's leaderboard markers."""
    return (
        "\n_Generated by `bench leaderboard --write` from the records in `results/` "
        "(full table: [results/LEADERBOARD.md](results/LEADERBOARD.md))._\n\n"
        + render(rows, "markdown", heading_level=3)
    )


def splice_readme(text: str, section: str, name: str = "README.md") -> str:
    """``text`` with everything between the markers replaced by ``section``."""
    start, end = text.find(START), text.find(END)
    if start < 0 or end < 0 or end < start:
        raise UsageError(f"{name} has no '{START}' ... '{END}' markers; add them where the leaderboard goes")
    return text[: start + len(START)] + "\n" + section.strip("\n") + "\n" + text[end:]


# --- the leaderboard table (bench leaderboard --format html, bench report) ------------------

# numeric sort keys of the leaderboard columns, by header name (a column not named here sorts as text)
_SORT_KEYS: dict[str, str] = {
    "n": "n", "final mean": "final_mean", "std": "final_std", "min": "final_min", "best epoch": "best_epoch_mean",
    "reached": "reached_epoch", "time": "time_to_target_s", "params": "params", "epochs": "epochs",
    "img/s": "images_per_s", "95% CI": "final_ci95_low", "p": "p_reaching_target", "wall": "wall_s_median",
    "verified": "verified",
}


def status_class(status: str) -> str:
    """CSS class of a leaderboard status: ``pass``, ``near`` (best epoch only, provisional) or ``fail``."""
    if status.startswith(PROVISIONAL):
        return "near"
    return {PASS: "pass", BEST_ONLY: "near"}.get(status, "fail" if status.startswith("fail") else "other")


def leaderboard_cells(row: Row, link: Callable[[Group], str | None] | None = None) -> list[Cell]:
    """One leaderboard row as cells: the text of ``display_cells``, numbers sortable, the model linked."""

    d = row.as_dict()
    cells = []
    for header, text in zip(HEADERS, display_cells(row), strict=True):
        value = d[_SORT_KEYS[header]] if header in _SORT_KEYS else None
        if header == "status":
            cells.append(Cell(text, None, cls=f"status {status_class(str(text))}"))
            continue
        href = link(row.group) if link and header == "model" else None
        cells.append(Cell(text, float(value) if isinstance(value, int | float) else None, href))
    return cells


def section_id(title: str) -> str:
    return "t-" + anchor(title.split(" ", 1)[0])


@dataclass(frozen=True)
class LeaderboardSection:
    """One target's part of the leaderboard, as ``components.html``'s ``leaderboard_section`` shows it."""

    title: str
    target: Target | None
    cells: list[list[Cell]]

    @property
    def anchor(self) -> str:
        return section_id(self.title)

    @property
    def headers(self) -> list[str]:
        return HEADERS


def leaderboard_sections(rows: list[Row],
                         link: Callable[[Group], str | None] | None = None) -> list[LeaderboardSection]:
    """Each target's heading and table cells (``link`` gives the model cell's link)."""

    return [LeaderboardSection(title, section[0].target, [leaderboard_cells(r, link) for r in section])
            for title, section in sections(rows)]


def leaderboard_document(rows: list[Row], heading_level: int = 2) -> str:
    """``bench leaderboard --format html``: a complete page with one table per target and the rule."""

    return page("leaderboard.html", "cnnbench leaderboard", sections=leaderboard_sections(rows),
                heading_level=heading_level, rule=RULE)
