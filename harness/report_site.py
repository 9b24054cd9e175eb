"""``bench report``: a static, self-contained site built from the run records.

``index.html`` has, per dataset, the field plot (accuracy against parameters, targets as boxes, the Pareto
front) and every target's leaderboard table with its time-to-target chart; ``runs/<config>.html`` is one page
per configuration (seeds, curves, confusion heat map, per-class accuracy, recipe, machine). No CDN, no server:
the pages open from disk and read the same without JavaScript. Imports matplotlib, never torch (the optional
misclassified grids come through a callback the command line passes in).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import leaderboard as lb
from . import report_plots as plots
from .errors import BenchError
from .files import write_atomic
from .formatting import class_names, pct, seconds_text
from .html import Cell, anchor, esc, leaderboard_tables, page, pairs_table, section_id, status_class, table
from .records import Target
from .runrecord import RunRecord

MARKER = ".cnnbench-report"  # marks a folder bench report made, so it may replace the files in it
MAX_TIME_CURVES = 8  # configurations per hardware class on a time-to-target chart (the fastest)

# the plotting code and matplotlib's version: a stored plot drawn by other code is drawn again
_PLOT_CODE = Path(plots.__file__).read_bytes() + plots.matplotlib_version().encode()
# (record, png path) -> a note on what was drawn; raises when the grid cannot be made
Misclassified = Callable[[RunRecord, Path], str]


@dataclass
class Config:
    """One configuration (a leaderboard group) and what its page needs."""

    group: lb.Group
    slug: str
    label: str
    rows: list[lb.Row]
    subset: bool

    @property
    def page(self) -> str:
        return f"runs/{self.slug}.html"

    @property
    def dataset(self) -> str:
        return self.group.first.dataset

    def passes(self) -> bool:
        return any(r.status == lb.PASS for r in self.rows)


@dataclass
class Site:
    """What a build wrote."""

    out: Path
    index: Path
    pages: int = 0
    plots: int = 0
    reused: int = 0  # plots kept from the previous build (their data had not changed)
    notes: list[str] = field(default_factory=list)


class _Output:
    """The output folder: writes files atomically (skipping unchanged ones) and removes stale ones after."""

    def __init__(self, out: Path, results_dir: Path | None) -> None:
        self.out = out
        self.kept: set[Path] = set()
        self.reused = 0
        if results_dir is not None:
            o, r = out.resolve(), Path(results_dir).resolve()
            if o == r or r in o.parents:
                raise BenchError(f"--out {out} is inside the results folder {results_dir}; the report never "
                                 "writes there")
        if out.is_file():
            raise BenchError(f"--out {out} is a file, not a folder")
        if out.is_dir() and any(out.iterdir()) and not (out / MARKER).is_file():
            raise BenchError(f"{out} is not empty and was not made by bench report; choose a new or empty --out")
        self.write(MARKER, "made by bench report: its files are replaced on every build\n")

    def write(self, name: str, data: str | bytes) -> Path:
        path = self.out / name
        raw = data.encode() if isinstance(data, str) else data
        if not (path.is_file() and path.read_bytes() == raw):
            write_atomic(path, raw)
        self.kept.add(path)
        return path

    def keep(self, path: Path) -> None:
        self.kept.add(path)

    def stale(self, name: str, data: Any) -> str | None:
        """The stamp of a plot of ``data``, or None when the file there already carries it (drawn from the
        same data by the same plotting code): a rebuild after a few new runs redraws only what they change."""
        digest = hashlib.sha1(_PLOT_CODE + repr(data).encode()).hexdigest()[:20]
        stamp = f"<!-- cnnbench-report {digest} -->"
        path = self.out / name
        if path.is_file():
            with open(path, "rb") as fh:
                if stamp.encode() in fh.read(400):
                    self.keep(path)
                    self.reused += 1
                    return None
        return stamp

    def write_plot(self, name: str, stamp: str, svg: str) -> None:
        prolog, rest = svg.split("\n", 1)
        self.write(name, f"{prolog}\n{stamp}\n{rest}")

    def remove_stale(self) -> None:
        """Files a previous build wrote that this one did not (a configuration whose runs are gone)."""
        for folder in ("runs", "plots"):
            for path in (self.out / folder).glob("*"):
                if path.is_file() and path not in self.kept and path.suffix in (".html", ".svg", ".png"):
                    path.unlink()


# --- configurations ---------------------------------------------------------------------------


def config_slug(group: lb.Group) -> str:
    """A stable, safe file name for a configuration: its model and a hash of what makes it one."""
    digest = hashlib.sha1(repr(group.key).encode()).hexdigest()[:8]
    return f"{anchor(group.first.model)[:48]}-{digest}"


def _facts(group: lb.Group) -> dict[str, str]:
    r = group.first
    precision = lb.precision_text(r) if hasattr(lb, "precision_text") else r.precision
    return {"normalizer": r.normalizer, "augmentation": r.augmentation, "loader": r.loader, "precision": precision,
            "device": lb.device_kind(r), "data": f"{r.train_images}/{r.test_images} images"}


def config_labels(groups: Sequence[lb.Group]) -> list[str]:
    """Short names: the model, plus what tells it apart from the other configurations of that model
    (settings, then the recipe keys that differ, e.g. ``cifar_3block (group, lr 0.05)``)."""
    by_model: dict[tuple[str, str], list[int]] = {}
    for i, g in enumerate(groups):
        by_model.setdefault((g.first.dataset, g.first.model), []).append(i)
    labels = [g.first.model for g in groups]
    for members in by_model.values():
        if len(members) < 2:
            continue
        facts = [_facts(groups[i]) for i in members]
        varying = [k for k in facts[0] if len({f[k] for f in facts}) > 1]
        recipes = [groups[i].first.recipe for i in members]
        keys = list(dict.fromkeys(k for r in recipes for k in r))
        differ = [k for k in keys if len({json.dumps(r.get(k), sort_keys=True) for r in recipes}) > 1]
        for i, f, recipe in zip(members, facts, recipes, strict=True):
            bits = [f[k] for k in varying] + [f"{k} {recipe.get(k)}" for k in differ[:3]]
            labels[i] += f" ({', '.join(bits)}{', ...' if len(differ) > 3 else ''})" if bits else ""
        counts: dict[str, int] = {}
        for i in members:
            counts[labels[i]] = counts.get(labels[i], 0) + 1
        seen: dict[str, int] = {}
        for i in members:  # still alike (the same settings, run twice): number them
            if counts[labels[i]] > 1:
                seen[labels[i]] = seen.get(labels[i], 0) + 1
                labels[i] += f" #{seen[labels[i]]}"
    return labels


def make_configs(rows: Sequence[lb.Row], sizes: dict[str, tuple[int, int]]) -> list[Config]:
    groups: list[lb.Group] = []
    by_group: dict[int, list[lb.Row]] = {}
    for row in rows:
        if id(row.group) not in by_group:
            groups.append(row.group)
        by_group.setdefault(id(row.group), []).append(row)
    labels = config_labels(groups)
    return [Config(g, config_slug(g), label, by_group[id(g)], lb.is_subset(g, sizes))
            for g, label in zip(groups, labels, strict=True)]


# --- the build ----------------------------------------------------------------------------------


def build_site(records: Sequence[RunRecord], targets: Sequence[Target], out: Path,
               sizes: dict[str, tuple[int, int]] | None = None, results_dir: Path | None = None,
               misclassified: Misclassified | None = None) -> Site:
    """Write the report into ``out``; returns what was written."""
    sizes = sizes or {}
    targets = list(targets)
    output = _Output(Path(out), results_dir)
    rows = lb.sort_rows(lb.build_rows(lb.group_records(records), targets, sizes), "acc", [t.id for t in targets])
    configs = make_configs(rows, sizes)
    site = Site(Path(out), Path(out) / "index.html")

    files: list[tuple[str, str | None, plots.Job]] = []  # what to draw: file, stamp (None: up to date), job
    for config in configs:
        goals = [(t.id, t.min_test_acc) for t in targets if t.dataset == config.dataset]
        data = (goals, [(r.seed, [dataclasses.astuple(e) for e in r.epochs]) for r in config.group.records])
        name = f"runs/{config.slug}-curves.svg"
        files.append((name, output.stale(name, data), (plots.curves_plot, (config.group.records, goals))))
    charts: dict[str, str] = {}  # target id -> its time-to-target chart
    for target in targets:
        panels = time_panels(target, configs)
        if panels:
            charts[target.id] = name = f"plots/time-{anchor(target.id)}.svg"
            files.append((name, output.stale(name, (panels, target.min_test_acc)),
                          (plots.time_plot, (panels, target.min_test_acc))))
    fields = {d: _field_job(d, configs, targets) for d in _datasets(configs, targets)}
    todo = [job for _, stamp, job in files if stamp] + [job for job in fields.values() if job]
    drawn = iter(plots.draw_all(todo))
    for name, stamp, _ in files:
        if stamp:
            output.write_plot(name, stamp, next(drawn))
    field_svgs = {d: next(drawn) if job else "" for d, job in fields.items()}
    site.plots = len(files) + sum(bool(svg) for svg in field_svgs.values())

    for config in configs:
        grid = _misclassified_html(config, output, misclassified, site.notes)
        output.write(config.page, config_page(config, grid))
        site.pages += 1
    body = index_body(configs, rows, targets, charts, field_svgs)
    output.write("index.html", page("cnnbench report", body, nav=_index_nav(configs, targets)))
    site.pages += 1
    output.remove_stale()
    site.reused = output.reused
    return site


# --- the index ------------------------------------------------------------------------------------


def _datasets(configs: Sequence[Config], targets: Sequence[Target]) -> list[str]:
    present = {c.dataset for c in configs}
    ordered = list(dict.fromkeys(t.dataset for t in targets if t.dataset in present))
    return ordered + sorted(present - set(ordered))


def _index_nav(configs: Sequence[Config], targets: Sequence[Target]) -> list[tuple[str, str]]:
    nav = [(d, f"#d-{anchor(d)}") for d in _datasets(configs, targets)]
    return nav + [(t.id, f"#{section_id(t.id)}") for t in targets if any(c.dataset == t.dataset for c in configs)]


def index_body(configs: list[Config], rows: list[lb.Row], targets: list[Target], charts: dict[str, str],
               field_svgs: dict[str, str]) -> str:
    runs = sum(len(c.group.records) for c in configs)
    newest = max((r.created or "" for c in configs for r in c.group.records), default="")
    parts = [
        "<h1>cnnbench report</h1>\n",
        f'<p class="summary">{runs:,} runs in {len(configs):,} configurations'
        + (f"; newest run {esc(newest[:16])}" if newest else "") + ".</p>\n",
    ]
    if not configs:
        parts.append("<p>No runs: the results folder has no usable records.</p>\n")
    links = {id(c.group): c.page for c in configs}

    def after(row: lb.Row) -> str:
        return "" if row.target is None else _time_html(row.target, charts.get(row.target.id))

    for dataset in _datasets(configs, targets):
        parts.append(f'<section id="d-{anchor(dataset)}">\n<h2>{esc(dataset)}</h2>\n')
        parts.append(_field_html(dataset, [c for c in configs if c.dataset == dataset], field_svgs[dataset]))
        parts.append(leaderboard_tables([r for r in rows if r.group.first.dataset == dataset], 3,
                                        lambda g: links.get(id(g)), after))
        parts.append("</section>\n")
    parts.append(f'<h2 id="rule">The rule</h2>\n<p class="rule">{esc(lb.RULE)}</p>\n')
    return "".join(parts)


def _field_job(dataset: str, configs: Sequence[Config], targets: Sequence[Target]) -> plots.Job | None:
    """The field plot of one dataset: configurations not run on a data subset, its targets as boxes."""
    points = [plots.FieldPoint(c.group.params(), c.group.mean_final(), min(c.group.finals), max(c.group.finals),
                               c.label, c.page, c.passes()) for c in configs if c.dataset == dataset and not c.subset]
    same: dict[tuple[float, int], list[str]] = {}  # targets with one box (they differ in epochs or time)
    for t in targets:
        if t.dataset == dataset:
            same.setdefault((t.min_test_acc, t.params_below), []).append(t.id)
    boxes = [plots.TargetBox(f"{', '.join(ids)}: >= {acc:.2%}, < {params:,} params", acc, params)
             for (acc, params), ids in same.items()]
    if not points and not boxes:
        return None
    return plots.field_plot, (points, boxes, f"{dataset}: final test accuracy against parameters")


def _field_html(dataset: str, configs: Sequence[Config], svg: str) -> str:
    if not svg:
        return ""
    hidden = sum(c.subset for c in configs)
    note = f" {hidden} configuration(s) run on a data subset are not plotted." if hidden else ""
    label = f"{dataset}: accuracy against parameters"
    caption = ("One point per configuration at its mean final-epoch test accuracy, the bar spanning its seeds' min "
               "to max; shaded boxes are the targets (fewer parameters, at least the accuracy); the dotted line is "
               "the Pareto front. Click a point for its page." + note)
    return (f'<figure class="field">{plots.inline_svg(svg, f"field-{anchor(dataset)}", label)}'
            f"<figcaption>{esc(caption)}</figcaption></figure>\n")


def _classify(record: RunRecord) -> str:
    """The hardware class a time budget is keyed by (the plain hardware name with an older leaderboard)."""
    classify = getattr(lb, "hardware_class", None)
    return str(classify(record)) if classify else lb.hardware_of(record)


def _time_curve(label: str, records: list[RunRecord], goal: float) -> plots.TimeCurve | None:
    """Mean test accuracy against wall seconds: epoch times, after the start-up the wall time adds."""
    if not any(e.seconds for r in records for e in r.epochs):
        return None
    overheads = []
    for r in records:
        wall = getattr(r, "wall_seconds", None)
        if isinstance(wall, int | float):
            overheads.append(max(0.0, float(wall) - sum(float(e.seconds or 0) for e in r.epochs)))
    start = statistics.fmean(overheads) if overheads else 0.0
    curve = lb.Group(("time",), list(records)).mean_curve()
    seconds = [start + s for _, _, s in curve]
    accs = [100 * a for _, a, _ in curve]
    reached = next((s for s, a in zip(seconds, accs, strict=True) if a >= 100 * goal - 100 * lb.EPS), None)
    return plots.TimeCurve(label, seconds, accs, reached)


def time_panels(target: Target, configs: Sequence[Config]) -> list[plots.TimePanel]:
    """Per hardware class, the configurations within the target's parameter limit, fastest to it first."""
    panels: dict[str, plots.TimePanel] = {}
    for config in configs:
        if config.subset or config.dataset != target.dataset or config.group.params() >= target.params_below:
            continue
        by_class: dict[str, list[RunRecord]] = {}
        for record in config.group.records:
            by_class.setdefault(_classify(record), []).append(record)
        for hardware, records in by_class.items():
            curve = _time_curve(config.label, records, target.min_test_acc)
            if curve is not None:
                names = "; ".join(sorted({lb.hardware_of(r) for r in records}))
                title = hardware if hardware == names else f"{hardware}: {names}"
                panels.setdefault(hardware, plots.TimePanel(title)).curves.append(curve)
    budget_of = getattr(target, "time_budget", None)
    for hardware, panel in panels.items():
        panel.curves.sort(key=lambda c: (c.reached is None, c.reached or 0.0, -c.accs[-1]))
        panel.left_out = max(0, len(panel.curves) - MAX_TIME_CURVES)
        del panel.curves[MAX_TIME_CURVES:]
        budget = budget_of(hardware) if callable(budget_of) else None
        panel.budget = float(budget) if isinstance(budget, int | float) else None
    return [panels[k] for k in sorted(panels)]


def _time_html(target: Target, chart: str | None) -> str:
    if chart is None:
        return (f'<p class="muted">No time-to-target chart: no configuration within {target.params_below:,} '
                "parameters recorded epoch times.</p>\n")
    return (f'<figure class="time wide"><img src="{esc(chart)}" alt="{esc(target.id)}: time to target per '
            f'hardware class"><figcaption>Time to target: the mean test accuracy over seeds against wall '
            f"seconds, per hardware class, for the configurations within the parameter limit (the fastest "
            f"{MAX_TIME_CURVES} per class). The dashed line is the target; a dot marks where a configuration "
            f"reached it; a dotted vertical line is the target's time budget.</figcaption></figure>\n")


# --- a configuration's page ----------------------------------------------------------------------


def config_page(config: Config, misclassified_html: str) -> str:
    g, r = config.group, config.group.first
    title = f"{config.label} on {r.dataset}"
    sections = [
        ("summary", "Summary", _summary(config)),
        ("targets", "Targets", _targets(config)),
        ("seeds", "Seeds", _seeds(config)),
        ("curves", "Curves", _curves(config)),
        ("confusion", "Confusion matrix", _confusion(g.records)),
        ("per-class", "Per-class accuracy", _per_class(g.records)),
        ("misclassified", "Misclassified test images", misclassified_html),
        ("recipe", "Recipe", _recipe(r)),
        ("machine", "Machine", _machine(g.records)),
    ]
    body = [f"<h1>{esc(config.label)} <small class=\"muted\">on {esc(r.dataset)}</small></h1>\n"]
    for key, heading, html in sections:
        body.append(f'<section id="{key}">\n<h2>{heading}</h2>\n{html}</section>\n')
    nav = [("\u2190 report", "../index.html"), *((heading, f"#{key}") for key, heading, _ in sections)]
    return page(title, "".join(body), nav=nav)


def _curves(config: Config) -> str:
    return (f'<figure class="wide"><img src="{esc(config.slug)}-curves.svg" alt="loss and accuracy per epoch of '
            "every seed\"><figcaption>Per epoch, every seed (colours as in the seeds table): test solid, train "
            "dashed; dotted lines are the dataset's targets.</figcaption></figure>\n")


def _summary(config: Config) -> str:
    g, r = config.group, config.group.first
    std = g.std_final()
    line = (f"Final test accuracy {pct(g.mean_final(), 3)}" + (f" \u00b1 {pct(std)}" if std is not None else "")
            + f" (min {pct(min(g.finals))}, max {pct(max(g.finals))}) over {len(g.records)} seed(s).")
    facts = [
        ("model", r.model), ("dataset", r.dataset), ("parameters", f"{g.params():,}"),
        ("normalizer", r.normalizer), ("augmentation", r.augmentation), ("loader", r.loader),
        ("precision", lb.precision_text(r) if hasattr(lb, "precision_text") else r.precision),
        ("device", lb.device_kind(r)), ("recipe", lb.recipe_text(r.recipe)), ("epochs", g.epochs_run()),
        ("best-epoch accuracy (mean)", pct(g.mean_best())),
        ("img/s", lb.speed_text(g.images_per_s(), g.device_shared_by(), g.fused_seeds())), ("hardware", g.hardware()),
        ("train / test images", f"{r.train_images} / {r.test_images}"),
    ]
    note = '<p class="muted">Trained or tested on a subset of the data: it never passes a target.</p>\n' \
        if config.subset else ""
    return f'<p class="summary">{esc(line)}</p>\n{note}{pairs_table(facts)}'


def _targets(config: Config) -> str:
    rows = [row for row in config.rows if row.target is not None]
    if not rows:
        return "<p>No target for this dataset.</p>\n"
    cells = [[Cell(row.target.id, href=f"../index.html#{section_id(row.target.id)}"), row.target.rule(),
              Cell(row.status, cls=f"status {status_class(row.status)}"),
              Cell("-" if row.reached_epoch is None else row.reached_epoch, row.reached_epoch),
              Cell(seconds_text(row.reached_seconds), row.reached_seconds)] for row in rows]
    return table(["target", "rule", "status", "reached (epoch)", "time"], cells, sortable=False)


def _seeds(config: Config) -> str:
    headers = ["seed", "run", "final acc", "best acc", "best epoch", "epochs", "status", "seconds", "img/s",
               "created", "weights"]
    html_rows = []
    for i, r in enumerate(config.group.records):
        wall = getattr(r, "wall_seconds", None)
        seconds = wall if isinstance(wall, int | float) else r.total_seconds
        html_rows.append([
            Cell(r.seed, i, swatch=plots.PALETTE[i % len(plots.PALETTE)]), Cell(r.run_id),
            Cell(pct(r.final_test_acc), r.final_test_acc), Cell(pct(r.best_test_acc), r.best_test_acc),
            Cell(r.best_epoch or "-", r.best_epoch), Cell(r.n_epochs, r.n_epochs), Cell(r.status),
            Cell(seconds_text(seconds), seconds),
            Cell("-" if r.images_per_s is None else f"{r.images_per_s:,.0f}", r.images_per_s),
            Cell(r.created or "-"), Cell(r.weights or "-"),
        ])
    rendered = table(headers, html_rows)
    superseded = config.group.superseded
    note = (f'<p class="muted">Superseded (an older record of a seed counted here): '
            f"{esc(', '.join(r.run_id for r in superseded))}</p>\n") if superseded else ""
    return rendered + note


def _confusion(records: Sequence[RunRecord]) -> str:
    """The confusion matrix summed over seeds, as a heat map table (rows: true class, shaded by row share)."""
    matrices = [r.confusion for r in records if r.confusion]
    if not matrices:
        return "<p>No confusion matrix recorded.</p>\n"
    shape = [len(row) for row in matrices[0]]
    same = [m for m in matrices if [len(row) for row in m] == shape]
    total = [[sum(m[i][j] for m in same) for j in range(width)] for i, width in enumerate(shape)]
    names = class_names(records[0])
    names = names + [str(i) for i in range(len(names), len(total))]
    off = [v / max(1, sum(row)) for i, row in enumerate(total) for j, v in enumerate(row) if i != j]
    worst = max(off, default=0.0) or 1.0
    head = "".join(f'<th scope="col">{esc(n)}</th>' for n in names[: len(total)])
    lines = []
    for i, row in enumerate(total):
        n = max(1, sum(row))
        cells = []
        for j, v in enumerate(row):
            share = v / n
            if i == j:
                style = f"background: rgba(26, 127, 55, {0.15 + 0.45 * share:.3f})"
            else:
                style = f"background: rgba(207, 34, 46, {0.75 * min(1.0, share / worst):.3f})" if v else ""
            title = f"true {names[i]}, predicted {names[j]}: {v} ({share:.2%} of the row)"
            cells.append(f'<td style="{style}" title="{esc(title)}">{v}</td>')
        lines.append(f'<tr><th scope="row">{esc(names[i])}</th>{"".join(cells)}</tr>')
    caption = (f"Final epoch, summed over {len(same)} seed(s); rows are the true class, columns the prediction. "
               "Green: correct; red: the larger share of a row's images predicted as that class.")
    return (f'<p class="muted">{esc(caption)}</p>\n<div class="table-wrap"><table class="heat">\n'
            f'<thead><tr><th scope="col">true \\ predicted</th>{head}</tr></thead>\n<tbody>\n'
            + "\n".join(lines) + "\n</tbody></table></div>\n")


def _per_class(records: Sequence[RunRecord]) -> str:
    classes = list(dict.fromkeys(name for r in records for name in r.per_class_acc))
    if not classes:
        return "<p>No per-class accuracy recorded.</p>\n"
    cells = []
    for name in classes:
        values = [float(r.per_class_acc[name]) for r in records if name in r.per_class_acc]
        mean = statistics.fmean(values)
        cells.append([Cell(name), Cell(pct(mean), mean), Cell(pct(min(values)), min(values)),
                      Cell(pct(max(values)), max(values))])
    return ('<p class="muted">Final-epoch test accuracy per class, over seeds.</p>\n'
            + table(["class", "mean", "min", "max"], cells))


def _misclassified_html(config: Config, output: _Output, make: Misclassified | None, notes: list[str]) -> str:
    with_weights = [r for r in config.group.records if r.weights]
    if not with_weights:
        return "<p>No seed saved its weights, so the images it gets wrong cannot be shown.</p>\n"
    record = with_weights[0]
    name = f"runs/{anchor(record.run_id)}-misclassified.png"
    path = output.out / name
    note = ""
    if make is not None and not path.is_file():
        try:
            note = make(record, path)
        except Exception as exc:  # a missing dataset or weights file, or a plugin's model that fails to build
            message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            notes.append(f"{config.label}: no misclassified grid ({message})")
            return f"<p>Skipped: {esc(message)}</p>\n"
    if path.is_file():
        output.keep(path)
        src = name.split("/", 1)[1]
        return (f'<figure><img src="{esc(src)}" alt="test images seed {esc(record.seed)} gets wrong">'
                f"<figcaption>Seed {esc(record.seed)} ({esc(record.run_id)}): the first misclassified test images, "
                f"with their true and predicted classes. {esc(note)}</figcaption></figure>\n")
    return (f"<p>Seed {esc(record.seed)} saved its weights: <code>bench report --data-dir DIR</code> adds the grid "
            "of the test images it gets wrong (it rebuilds the model with torch).</p>\n")


def _recipe(record: RunRecord) -> str:
    pairs = [("summary", lb.recipe_text(record.recipe)), *record.recipe.items()]
    command = f"<p>Command of the first seed:</p>\n<pre>{esc(record.command)}</pre>\n" if record.command else ""
    return pairs_table(pairs) + command


def _machine(records: Sequence[RunRecord]) -> str:
    r = records[0]
    wall = getattr(r, "wall_seconds", None)
    pairs: list[tuple[str, Any]] = [
        ("device", r.device), ("hardware", lb.hardware_of(r)), ("hardware class", _classify(r)),
        ("threads", r.threads), ("wall seconds", wall), ("total epoch seconds", r.total_seconds),
        *((f"machine.{k}", v) for k, v in r.machine.items()),
        *((f"versions.{k}", v) for k, v in r.versions.items()),
        *((f"git.{k}", v) for k, v in r.git.items()),
        *((f"plugin.{kind}", f"{p.get('plugin')} ({p.get('distribution') or 'local'} {p.get('version') or ''})"
           .replace(" )", ")")) for kind, p in r.plugins.items() if isinstance(p, dict)),
    ]
    others = sorted({lb.hardware_of(x) for x in records[1:]} - {lb.hardware_of(r)})
    note = f'<p class="muted">Other seeds ran on: {esc("; ".join(others))}</p>\n' if others else ""
    return f'<p class="muted">Seed {esc(r.seed)} ({esc(r.run_id)}):</p>\n' + pairs_table(pairs) + note
