"""The report's plots as SVG text (matplotlib): the field (accuracy vs parameters), curves, time to target.

``bench report`` draws dozens of these, so they are kept lean: one reused figure for the per-configuration
curves, fixed margins instead of ``tight_layout``, text left as text (``svg.fonttype='none'``), no mathtext
(tick labels are plain strings; a ``$`` in a plugin's name is escaped), and a fixed hash salt so the same
data gives the same file. No pyplot: figures are plain ``matplotlib.figure.Figure`` objects.
"""

from __future__ import annotations

import contextlib
import io
import math
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from importlib.metadata import version
from typing import TYPE_CHECKING

from markupsafe import Markup

from cnnbench.runrecord import RunRecord

if TYPE_CHECKING:
    from matplotlib.artist import Artist
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.typing import RcKeyType

PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94", "#f7b6d2", "#c7c7c7",
           "#dbdb8d", "#9edae5")  # matplotlib's tab20 order: the ten strong colours first
TARGET_COLORS = ("#e36209", "#8250df", "#1a7f37", "#bf3989", "#0969da")
PASS_COLOR, OTHER_COLOR = "#1a7f37", "#0969da"
STYLE: dict[RcKeyType, object] = {
    "svg.fonttype": "none",  # text stays text: small files, selectable labels
    "svg.hashsalt": "cnnbench",  # stable ids: the same data gives the same bytes
    "font.size": 9,
    "axes.titlesize": 9.5,
    "axes.titley": 1.0,  # a fixed title position: matplotlib's automatic one measures every tick label again
    "axes.labelsize": 9,
    "legend.fontsize": 7.5,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "axes.grid.axis": "y",  # horizontal grid lines only: half the tick artists to draw
    "grid.alpha": 0.3,
    "lines.linewidth": 1.3,
    "path.simplify": True,
}


@contextlib.contextmanager
def plot_style() -> Iterator[None]:
    """The report's matplotlib settings, for the duration of a build (nothing leaks into other plots)."""
    import matplotlib  # lazy: matplotlib

    with matplotlib.rc_context(STYLE):
        yield


def matplotlib_version() -> str:
    return version("matplotlib")


def text(value: object) -> str:
    """A plugin's string as literal matplotlib text (a ``$`` would otherwise start mathtext)."""
    return str(value).replace("$", r"\$")


def color(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def _plain(v: float, _pos: int | None = None) -> str:
    return f"{v:g}"


def _count(v: float, _pos: int | None = None) -> str:
    """Parameter counts on a log axis: 5k, 20k, 1.5M."""
    if v >= 1e6:
        return f"{v / 1e6:g}M"
    return f"{v / 1e3:g}k" if v >= 1e3 else f"{v:g}"


def svg_of(fig: Figure) -> str:
    """The figure as SVG text (no timestamp: rebuilding unchanged data gives the same file)."""
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", metadata={"Date": None})
    return buffer.getvalue()


_ID = re.compile(r'\bid="([^"]+)"')


def inline_svg(svg: str, prefix: str, label: str) -> Markup:
    """SVG text ready to sit inside an HTML page: no XML prolog or metadata, ids prefixed so that several
    plots on one page never share an id, and an accessible name (``label`` is escaped by ``Markup.format``)."""
    svg = svg[svg.index("<svg"):]
    svg = re.sub(r"<metadata>.*?</metadata>\s*", "", svg, flags=re.S)
    svg = _ID.sub(lambda m: f'id="{prefix}-{m.group(1)}"', svg)
    svg = svg.replace("url(#", f"url(#{prefix}-").replace('href="#', f'href="#{prefix}-')
    # Markup: this is our own matplotlib output (``svg_of``), whose text matplotlib escapes; no record text
    # reaches it any other way. It is the one piece of HTML the templates insert as it is.
    return Markup(svg).replace(Markup("<svg "), Markup('<svg role="img" aria-label="{}" ').format(label), 1)


def _percent(values: Sequence[float | None]) -> list[float]:
    return [math.nan if v is None else 100.0 * v for v in values]


def _positive(values: Sequence[float | None]) -> list[float]:
    return [v if v is not None and v > 0 else math.nan for v in values]


# --- the field: accuracy against parameters ---------------------------------------------------


@dataclass(frozen=True)
class FieldPoint:
    """One configuration on the field plot (accuracies are fractions)."""

    params: int
    mean: float
    low: float
    high: float
    label: str
    href: str
    passes: bool


@dataclass(frozen=True)
class TargetBox:
    label: str
    min_acc: float
    params_below: int


def pareto_front(points: Sequence[FieldPoint]) -> list[FieldPoint]:
    """The points no other point beats with as few or fewer parameters (by mean final accuracy)."""
    front: list[FieldPoint] = []
    for p in sorted(points, key=lambda p: (p.params, -p.mean)):
        if not front or p.mean > front[-1].mean:
            front.append(p)
    return front


def field_plot(points: Sequence[FieldPoint], boxes: Sequence[TargetBox], title: str,
               xlabel: str = "parameters (log scale)",
               ylabel: str = "final test accuracy (%), mean and min-max over seeds") -> str:
    """Mean final test accuracy against parameters (log), min-max bars over seeds, targets as shaded boxes,
    the Pareto front; each point links to ``point.href``. The int8 twin passes bytes as ``params``."""
    from matplotlib.figure import Figure  # lazy: matplotlib
    from matplotlib.patches import Rectangle  # lazy: matplotlib
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter, NullLocator  # lazy: matplotlib

    fig = Figure(figsize=(10, 4.2))
    fig.subplots_adjust(left=0.07, right=0.985, bottom=0.12, top=0.93)
    ax = fig.add_subplot()
    sizes = [p.params for p in points] + [b.params_below for b in boxes]
    left, right = max(1.0, min(sizes) / 1.8), max(sizes) * 1.8
    accs = [100 * v for p in points for v in (p.low, p.high)] + [100 * b.min_acc for b in boxes]
    low, high = min(accs), max(accs)
    pad = max(0.1, 0.08 * (high - low))
    bottom, top = low - pad, min(100.0, high + pad) if high < 100 else 100.0 + pad
    for i, box in enumerate(boxes):
        c = TARGET_COLORS[i % len(TARGET_COLORS)]
        ax.add_patch(Rectangle((left, 100 * box.min_acc), box.params_below - left, 100 - 100 * box.min_acc + 50,
                               facecolor=c, alpha=0.12, edgecolor=c, linestyle="--", linewidth=1,
                               label=text(box.label)))
    if points:
        front = pareto_front(points)
        xs = [p.params for p in front] + [right]
        ax.step(xs, [100 * p.mean for p in front] + [100 * front[-1].mean], where="post", color="#57606a",
                linestyle=":", linewidth=1.2, label="Pareto front")
        ax.errorbar([p.params for p in points], [100 * p.mean for p in points],
                    yerr=[[100 * (p.mean - p.low) for p in points], [100 * (p.high - p.mean) for p in points]],
                    fmt="none", ecolor="#8c959f", elinewidth=1, capsize=2)
        for passes, name in ((True, "passes a target"), (False, "passes no target")):
            chosen = [p for p in points if p.passes == passes]
            if chosen:
                dots = ax.scatter([p.params for p in chosen], [100 * p.mean for p in chosen], s=28, zorder=3,
                                  color=PASS_COLOR if passes else OTHER_COLOR, label=name)
                dots.set_urls([p.href for p in chosen])
        for p in front:
            ax.annotate(text(p.label), (p.params, 100 * p.mean), xytext=(4, 4), textcoords="offset points",
                        fontsize=7, color="#24292f")
    ax.set_xscale("log")
    ax.set_xlim(left, right)
    ax.set_ylim(bottom, top)
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(_count))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.yaxis.set_major_formatter(FuncFormatter(_plain))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(text(title), loc="left")
    ax.legend(loc="lower right", framealpha=0.9)
    return svg_of(fig)


# --- per-configuration curves ---------------------------------------------------------------


class CurvesFigure:
    """Train/test loss and accuracy per epoch of every seed of a configuration, on one reused figure."""

    def __init__(self) -> None:
        from matplotlib.figure import Figure  # lazy: matplotlib
        from matplotlib.lines import Line2D  # lazy: matplotlib
        from matplotlib.ticker import (  # lazy: matplotlib
            FuncFormatter,
            LogLocator,
            MaxNLocator,
            NullFormatter,
            NullLocator,
        )

        self.fig = Figure(figsize=(9, 3.3))
        self.fig.subplots_adjust(left=0.075, right=0.985, bottom=0.14, top=0.9, wspace=0.2)
        self.loss, self.acc = self.fig.subplots(1, 2)
        self.loss.set_yscale("log")
        self.loss.yaxis.set_major_formatter(FuncFormatter(_plain))
        self.loss.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0), numticks=6))
        self.loss.yaxis.set_minor_locator(NullLocator())
        self.loss.yaxis.set_minor_formatter(NullFormatter())
        self.acc.yaxis.set_major_locator(MaxNLocator(nbins=5))  # few ticks: each is several artists to draw
        self.acc.yaxis.set_major_formatter(FuncFormatter(_plain))
        for ax, name in ((self.loss, "loss (NLL, log scale)"), (self.acc, "accuracy (%)")):
            ax.set_xlabel("epoch")
            ax.set_title(name, loc="left")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=6))
        self.loss.legend(handles=[Line2D([], [], color="#444", label="test"),
                                  Line2D([], [], color="#444", linestyle="--", label="train")], loc="upper right")
        self.pool: list[tuple[Line2D, Line2D, Line2D, Line2D]] = []  # per seed: test/train loss, test/train acc
        self.marks: list[Artist] = []

    def _lines(self, i: int) -> tuple[Line2D, Line2D, Line2D, Line2D]:
        while len(self.pool) <= i:
            c = color(len(self.pool))
            self.pool.append((*self.loss.plot([], [], color=c), *self.loss.plot([], [], color=c, linestyle="--"),
                              *self.acc.plot([], [], color=c), *self.acc.plot([], [], color=c, linestyle="--")))
        return self.pool[i]

    def render(self, records: Sequence[RunRecord], goals: Sequence[tuple[str, float]] = ()) -> str:
        """SVG of ``records`` (one colour per seed, in order, as ``color(i)``); ``goals`` are (label, accuracy)
        lines. Lines are reused from render to render: creating artists costs more than drawing them."""
        for artist in self.marks:
            artist.remove()
        self.marks = []
        for line in (line for lines in self.pool for line in lines):
            line.set_visible(False)
        for i, record in enumerate(records):
            xs = [e.epoch for e in record.epochs]
            series = (_positive([e.test_loss for e in record.epochs]), _positive([e.train_loss for e in record.epochs]),
                      _percent([e.test_acc for e in record.epochs]), _percent([e.train_acc for e in record.epochs]))
            for line, ys in zip(self._lines(i), series, strict=True):
                line.set_data(xs, ys)
                line.set_visible(True)
        for ax in (self.loss, self.acc):
            ax.autoscale(True)  # the previous render fixed the limits
            ax.relim(visible_only=True)
            ax.autoscale_view()
        ylim = self.acc.get_ylim()
        by_accuracy: dict[float, list[str]] = {}
        for label, goal in goals:
            by_accuracy.setdefault(goal, []).append(label)
        for goal, labels in by_accuracy.items():
            if ylim[0] <= 100 * goal <= ylim[1]:
                self.marks.append(self.acc.axhline(100 * goal, color="#57606a", linestyle=":", linewidth=1))
                self.marks.append(self.acc.annotate(text(", ".join(labels)), (0.01, 100 * goal),
                                                    xycoords=("axes fraction", "data"), xytext=(0, 2),
                                                    textcoords="offset points", fontsize=7, color="#57606a"))
        self.acc.set_ylim(ylim)
        return svg_of(self.fig)


_CURVES: list[CurvesFigure] = []  # the figure curves_plot reuses (one per process)


def curves_plot(records: Sequence[RunRecord], goals: Sequence[tuple[str, float]] = ()) -> str:
    """One configuration's curves, on this process's reused figure."""
    if not _CURVES:
        _CURVES.append(CurvesFigure())
    return _CURVES[0].render(records, goals)


# --- time to target -----------------------------------------------------------------------


@dataclass(frozen=True)
class TimeCurve:
    """One configuration's mean test accuracy against wall seconds on one hardware class."""

    label: str
    seconds: list[float]
    accs: list[float]
    reached: float | None  # seconds at which the mean first met the target


@dataclass
class TimePanel:
    hardware: str
    curves: list[TimeCurve] = field(default_factory=list)
    budget: float | None = None
    left_out: int = 0


def time_plot(panels: Sequence[TimePanel], goal: float) -> str:
    """Test accuracy against wall seconds, one panel per hardware class (a configuration keeps its colour
    across panels; one legend below them); the target as a dashed line, the time budget (when the target
    has one for that class) as a dotted vertical line, a dot where a configuration reached the target."""
    from matplotlib.figure import Figure  # lazy: matplotlib
    from matplotlib.lines import Line2D  # lazy: matplotlib
    from matplotlib.ticker import FuncFormatter, MaxNLocator  # lazy: matplotlib

    labels = list(dict.fromkeys(c.label for p in panels for c in p.curves))
    colours = {label: color(i) for i, label in enumerate(labels)}
    handles = [Line2D([], [], color=colours[label], label=text(label)) for label in labels]
    handles.append(Line2D([], [], color="#cf222e", linestyle="--", linewidth=1, label="target"))
    if any(p.budget is not None for p in panels):
        handles.append(Line2D([], [], color="#cf222e", linestyle=":", linewidth=1.2, label="time budget"))
    cols, ncol = min(3, len(panels)), min(3, len(handles))
    rows = -(-len(panels) // cols)
    legend = 0.2 + 0.19 * -(-len(handles) // ncol)  # inches
    height = 3.0 * rows + legend + 0.55
    fig = Figure(figsize=(9, height))
    fig.subplots_adjust(left=0.07, right=0.985, bottom=(legend + 0.45) / height, top=1 - 0.3 / height,
                        wspace=0.08, hspace=0.55 / rows)
    axes = list(fig.subplots(rows, cols, squeeze=False, sharey=True).flat)
    everything = [a for p in panels for c in p.curves for a in c.accs]
    top = max(everything + [100 * goal]) + 0.1
    bottom = max(min(everything + [100 * goal]), 100 * goal - 4 * (100 - 100 * goal)) - 0.1
    for ax, panel in zip(axes, panels, strict=False):
        for curve in panel.curves:
            ax.plot(curve.seconds, curve.accs, color=colours[curve.label])
            if curve.reached is not None:
                ax.plot([curve.reached], [100 * goal], "o", color=colours[curve.label], markersize=4)
        ax.axhline(100 * goal, color="#cf222e", linestyle="--", linewidth=1)
        if panel.budget is not None:
            ax.axvline(panel.budget, color="#cf222e", linestyle=":", linewidth=1.2)
        ax.set_xlim(left=0)
        ax.xaxis.set_major_locator(MaxNLocator(nbins=5))
        more = f" (+{panel.left_out} more)" if panel.left_out else ""
        ax.set_title(text(panel.hardware + more), loc="left")
        ax.set_xlabel("wall seconds")
    axes[0].set_ylim(bottom, top)
    axes[0].yaxis.set_major_locator(MaxNLocator(nbins=6))
    axes[0].yaxis.set_major_formatter(FuncFormatter(_plain))
    for ax in axes[::cols]:
        ax.set_ylabel("test accuracy (%)")
    for ax in axes[len(panels):]:  # panels left empty in the last row
        ax.set_visible(False)
    fig.legend(handles=handles, loc="lower center", ncol=ncol, frameon=False, bbox_to_anchor=(0.5, 0.01))
    return svg_of(fig)


# --- drawing many -------------------------------------------------------------------------

Job = tuple[Callable[..., str], tuple[object, ...]]  # a plot function of this module and its arguments


def draw_all(jobs: Sequence[Job]) -> list[str]:
    """The SVG of every job, in order, in this process: on a busy 2-core machine a pool of two processes
    measured slower (37.5 s against 28.9 s for 1,000 records), each worker paying for its own figures."""
    with plot_style():
        return [function(*args) for function, args in jobs]
