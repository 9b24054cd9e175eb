"""HTML pages from the Jinja2 templates in ``templates/`` (no leaderboard knowledge), shared by
``bench leaderboard --format html`` and ``bench report``.

``base.html`` is the page shell (inline CSS with a print style, a few lines of plain JavaScript that sort a
table when its header is clicked; every page reads the same without it), ``components.html`` holds the table
macros. Autoescaping is on for every ``.html`` template, so each value a template prints is escaped by
construction: names in records and plugins are third-party input. Pure Python (no matplotlib, no torch).
"""

from __future__ import annotations

import functools
import html
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import jinja2
from markupsafe import Markup


def anchor(text: str) -> str:
    """A stable, safe ``id`` for ``text`` (letters, digits, ``-``, ``_``, ``.``)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "x"


@dataclass(frozen=True)
class Cell:
    """One table cell: its text, an optional numeric sort key (``data-value``), link and CSS class."""

    text: object
    value: float | None = None
    href: str | None = None
    cls: str = ""
    swatch: str = ""  # a colour shown as a small square before the text (our palette, never record data)

    @property
    def sort_value(self) -> str | None:
        """The ``data-value`` the sorter reads (the number as Python writes it), or None to sort by text."""
        return repr(self.value) if self.value is not None and math.isfinite(self.value) else None

    @property
    def classes(self) -> str:
        return f"{self.cls} num".strip() if self.sort_value is not None else self.cls


def _as_html(value: object) -> Markup:
    """Every value a template prints, escaped as ``html.escape`` does it (``&quot;``, ``&#x27;``, where markupsafe
    writes ``&#34;``, ``&#39;``), so the pages stay byte-identical to the ones cnnbench wrote before it used
    templates. Markup (a macro's output, our own SVG) passes as it is; autoescape stays on underneath."""
    return value if isinstance(value, Markup) else Markup(html.escape(str(value), quote=True))


@functools.cache
def environment() -> jinja2.Environment:
    """The templates of ``cnnbench.reports``: autoescaped, undefined names an error, whitespace as written
    (a block tag's own line leaves nothing behind)."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("cnnbench.reports", "templates"),
        autoescape=jinja2.select_autoescape(["html"]),
        undefined=jinja2.StrictUndefined,
        finalize=_as_html,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["thousands"] = lambda number: f"{number:,}"
    return env


def page(template: str, title: str, nav: Sequence[tuple[str, str]] = (), **context: object) -> str:
    """A complete HTML document from ``template`` (which extends ``base.html``); ``nav`` is (text, href) pairs."""
    return environment().get_template(template).render(title=title, nav=nav, **context)
