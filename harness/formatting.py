"""Presentation helpers shared by the console, the reports and the leaderboard (one home each)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cnnbench.files import write_atomic

if TYPE_CHECKING:
    from cnnbench.runrecord import RunRecord

# our output formats -> tabulate's
TABLEFMT = {"table": "simple", "markdown": "github", "html": "html"}


def pct(value: float | None, digits: int = 2) -> str:
    """``0.99436`` -> ``99.44%``; ``None`` -> ``-``."""
    return "-" if value is None else f"{value:.{digits}%}"


def seconds_text(value: float | None) -> str:
    """``42.4`` -> ``42s``; ten minutes and more in minutes (``12.5min``); ``None`` -> ``-``."""
    if value is None:
        return "-"
    return f"{value:.0f}s" if value < 600 else f"{value / 60:.1f}min"


def class_names(record: RunRecord, dataset: Any = None) -> list[str]:
    """The class names of a run: the dataset's, else the record's per-class keys, else 0..N-1."""
    if dataset is not None and dataset.class_names:
        return list(dataset.class_names)
    if record.per_class_acc:
        return list(record.per_class_acc)
    return [str(i) for i in range(len(record.confusion or []))]


def per_class_table(record: RunRecord, tablefmt: str = "simple") -> str:
    """Final-epoch test accuracy per class, with the counts behind it (as seed 003 reports it)."""
    from tabulate import tabulate  # lazy: tabulate

    confusion = record.confusion or []
    rows = []
    for i, name in enumerate(class_names(record)):
        acc = record.per_class_acc.get(name)
        support = sum(confusion[i]) if i < len(confusion) else None
        correct = confusion[i][i] if i < len(confusion) else None
        rows.append([name, pct(acc), correct, support])
    return tabulate(rows, headers=["class", "test acc", "correct", "images"], tablefmt=tablefmt,
                    colalign=("right", "right", "right", "right"))


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the non-interactive Agg backend (reports run without a display)."""
    import matplotlib  # lazy: matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt  # lazy: matplotlib

    return plt


def save_figure(fig: Any, out: Path, dpi: int = 110) -> Path:
    """Save a matplotlib figure atomically (PNG or SVG by suffix) and close it."""

    from matplotlib import pyplot as plt  # lazy: matplotlib

    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=dpi, format=Path(out).suffix.lstrip(".") or "png")
    plt.close(fig)
    write_atomic(Path(out), buffer.getvalue())
    return Path(out)
