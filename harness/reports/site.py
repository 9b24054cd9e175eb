"""``bench report``: a static, self-contained site built from the run records.

``index.html`` has, per dataset, the field plot (accuracy against parameters, targets as boxes, the Pareto
front) and every target's leaderboard table with its time-to-target chart; ``runs/<config>.html`` is one page
per configuration (seeds, curves, confusion heat map, per-class accuracy, recipe, machine). No CDN, no server:
the pages open from disk and read the same without JavaScript. This module works out what each page shows;
the templates ``report-index.html`` and ``report-config.html`` lay it out. Imports matplotlib, never torch (the
optional misclassified grids come through a callback the command line passes in).

Every file is written atomically: a build that fails (a full disk) leaves each file either as the previous
build wrote it or whole, and no temporary file.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from markupsafe import Markup

from cnnbench.errors import UsageError
from cnnbench.files import read_regular, write_atomic
from cnnbench.formatting import class_names, pct, seconds_text
from cnnbench.records import Target
from cnnbench.reports import leaderboard as lb
from cnnbench.reports import plots, render
from cnnbench.reports.html import Cell, anchor, page
from cnnbench.reports.render import LeaderboardSection, leaderboard_sections, section_id, status_class
from cnnbench.runrecord import RunRecord, device_kind, hardware_class, hardware_of, precision_text, recipe_text

MARKER = ".cnnbench-report"  # marks a folder bench report made, so it may replace the files in it
FOLDERS = ("runs", "plots")  # the report's sub-folders, which it fills and prunes
MAX_TIME_CURVES = 8  # configurations per hardware class on a time-to-target chart (the fastest)
MAX_PLOT_BYTES = 64 << 20  # a plot file larger than this is not ours: drawn again

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
        _check_out(out, results_dir)
        self.write(MARKER, "made by bench report: its files are replaced on every build\n")

    def write(self, name: str, data: str | bytes) -> Path:
        path = self.out / name
        raw = data.encode() if isinstance(data, str) else data
        if not _holds(path, raw):
            write_atomic(path, raw)
        self.kept.add(path)
        return path

    def keep(self, path: Path) -> None:
        self.kept.add(path)

    def stale(self, name: str, data: object) -> str | None:
        """The stamp of a plot of ``data``, or None when the file there already carries it (drawn from the
        same data by the same plotting code): a rebuild after a few new runs redraws only what they change."""
        digest = hashlib.sha1(_PLOT_CODE + repr(data).encode()).hexdigest()[:20]
        stamp = f"<!-- cnnbench-report {digest} -->"
        path = self.out / name
        try:
            head = read_regular(path, MAX_PLOT_BYTES)[:400]
        except OSError:  # none yet, or not a regular file: drawn (and replaced)
            return stamp
        if stamp.encode() not in head:
            return stamp
        self.keep(path)
        self.reused += 1
        return None

    def write_plot(self, name: str, stamp: str, svg: str) -> None:
        prolog, rest = svg.split("\n", 1)
        self.write(name, f"{prolog}\n{stamp}\n{rest}")

    def remove_stale(self) -> None:
        """Files a previous build wrote that this one did not (a configuration whose runs are gone)."""
        for folder in FOLDERS:
            for path in (self.out / folder).glob("*"):
                if path.is_file() and path not in self.kept and path.suffix in (".html", ".svg", ".png"):
                    path.unlink()


def _check_out(out: Path, results_dir: Path | None) -> None:
    """Refuse an ``--out`` the report must not write into: inside the results, not a folder, someone else's
    folder, or a report folder whose ``runs``/``plots`` lead elsewhere (its stale files are deleted)."""
    if results_dir is not None:
        o, r = out.resolve(), Path(results_dir).resolve()
        if o == r or r in o.parents:
            raise UsageError(f"--out {out} is inside the results folder {results_dir}; the report never writes there")
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} exists and is not a folder")
    blocking = next((p for p in out.parents if p.exists() and not p.is_dir()), None)
    if blocking is not None:
        raise UsageError(f"--out {out} cannot be made: {blocking} is a file, not a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).is_file():
        raise UsageError(f"{out} is not empty and was not made by bench report; choose a new or empty --out")
    for folder in FOLDERS:
        path = out / folder
        if path.is_symlink() or (path.exists() and not path.is_dir()):
            raise UsageError(f"{path} is not a folder bench report made (a link or a file); remove it or choose "
                             "another --out")


def _holds(path: Path, raw: bytes) -> bool:
    """Whether ``path`` is a regular file with exactly ``raw`` in it (never blocks on a FIFO)."""
    try:
        return read_regular(path, len(raw)) == raw
    except OSError:  # missing, not a regular file, or larger
        return False


def _written_by(exc: BaseException, out: Path) -> bool:
    """An ``OSError`` about a file in the report folder: a write that failed (a full disk), not a missing input."""
    name = exc.filename if isinstance(exc, OSError) else None
    return isinstance(name, str) and Path(name).resolve().is_relative_to(out.resolve())


# --- configurations ---------------------------------------------------------------------------


def config_slug(group: lb.Group) -> str:
    """A stable, safe file name for a configuration: its model and a hash of what makes it one."""
    digest = hashlib.sha1(repr(group.key).encode()).hexdigest()[:8]
    return f"{anchor(group.first.model)[:48]}-{digest}"


def _facts(group: lb.Group) -> dict[str, str]:
    r = group.first
    precision = precision_text(r)
    return {"normalizer": r.normalizer, "augmentation": r.augmentation, "loader": r.loader, "precision": precision,
            "device": device_kind(r), "data": f"{r.train_images}/{r.test_images} images"}


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
    verified = lb.load_verifications(results_dir, records) if results_dir is not None else {}
    deployed = lb.load_deployments(results_dir, records) if results_dir is not None else {}
    groups = lb.group_records(records, verified, deployed)
    rows = lb.sort_rows(lb.build_rows(groups, targets, sizes), "acc", [t.id for t in targets])
    configs = make_configs(rows, sizes)
    site = Site(Path(out), Path(out) / "index.html")
    charts, fields = _draw_plots(output, configs, targets, site)
    for config in configs:
        grid = _misclassified(config, output, misclassified, site.notes)
        output.write(config.page, config_page(config, grid))
        site.pages += 1
    output.write("index.html", index_page(configs, rows, targets, charts, fields))
    site.pages += 1
    output.remove_stale()
    site.reused = output.reused
    return site


def _draw_plots(output: _Output, configs: Sequence[Config], targets: Sequence[Target],
                site: Site) -> tuple[dict[str, str], dict[str, str]]:
    """Draw what changed: each configuration's curves and each target's time chart (files), each dataset's
    field plot (inline). Returns the time charts' files by target id and the field plots' SVG by dataset."""
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
    fields.update({f"{d}{INT8}": _int8_field_job(d, configs, targets) for d in _datasets(configs, targets)})
    todo = [job for _, stamp, job in files if stamp] + [job for job in fields.values() if job]
    drawn = iter(plots.draw_all(todo))
    for name, stamp, _ in files:
        if stamp:
            output.write_plot(name, stamp, next(drawn))
    field_svgs = {d: next(drawn) if job else "" for d, job in fields.items()}
    site.plots = len(files) + sum(bool(svg) for svg in field_svgs.values())
    return charts, field_svgs


# --- the index ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FieldFigure:
    svg: Markup  # our own matplotlib output, ready to inline (plots.inline_svg)
    caption: str


@dataclass(frozen=True)
class DatasetPart:
    """One dataset's section of the index: its field plot and its targets' leaderboards."""

    name: str
    field: FieldFigure | None
    sections: list[LeaderboardSection]
    int8_field: FieldFigure | None = None  # int8 accuracy against int8 bytes, where runs were deployed

    @property
    def anchor(self) -> str:
        return f"d-{anchor(self.name)}"


def _datasets(configs: Sequence[Config], targets: Sequence[Target]) -> list[str]:
    present = {c.dataset for c in configs}
    ordered = list(dict.fromkeys(t.dataset for t in targets if t.dataset in present))
    return ordered + sorted(present - set(ordered))


def _index_nav(configs: Sequence[Config], targets: Sequence[Target]) -> list[tuple[str, str]]:
    nav = [(d, f"#d-{anchor(d)}") for d in _datasets(configs, targets)]
    return nav + [(t.id, f"#{section_id(t.id)}") for t in targets if any(c.dataset == t.dataset for c in configs)]


def _index_summary(configs: Sequence[Config]) -> str:
    runs = sum(len(c.group.records) for c in configs)
    newest = max((r.created or "" for c in configs for r in c.group.records), default="")
    return f"{runs:,} runs in {len(configs):,} configurations" + (f"; newest run {newest[:16]}" if newest else "") + "."


def index_page(configs: list[Config], rows: list[lb.Row], targets: list[Target], charts: dict[str, str],
               field_svgs: dict[str, str]) -> str:
    """``index.html``: the summary, per dataset its field plot and leaderboards, the rule."""
    links = {id(c.group): c.page for c in configs}
    parts = [
        DatasetPart(dataset, _field_figure(dataset, [c for c in configs if c.dataset == dataset], field_svgs[dataset]),
                    leaderboard_sections([r for r in rows if r.group.first.dataset == dataset],
                                         lambda g: links.get(id(g))),
                    _int8_figure(dataset, field_svgs.get(f"{dataset}{INT8}", "")))
        for dataset in _datasets(configs, targets)
    ]
    return page("report-index.html", "cnnbench report", _index_nav(configs, targets), summary=_index_summary(configs),
                datasets=parts, charts=charts, max_time_curves=MAX_TIME_CURVES, rule=lb.RULE)


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


INT8 = ":int8"  # the key of a dataset's int8 field plot


def _int8_field_job(dataset: str, configs: Sequence[Config], targets: Sequence[Target]) -> plots.Job | None:
    """The int8 twin of the field plot: each deployed configuration's mean int8 accuracy against its int8
    model bytes; targets with a byte budget as boxes."""
    points = []
    for c in configs:
        found = c.group.deployments()
        if c.dataset != dataset or c.subset or not found:
            continue
        accs = [float(d["int8"]["acc"]) for d in found]
        points.append(plots.FieldPoint(c.group.int8_bytes() or 0, statistics.fmean(accs), min(accs), max(accs),
                                       c.label, c.page, c.passes()))
    boxes = [plots.TargetBox(f"{t.id}: int8 >= {(t.min_int8_acc or 0):.2%}, <= {t.max_model_bytes:,} bytes",
                             t.min_int8_acc or 0.0, t.max_model_bytes + 1)
             for t in targets if t.dataset == dataset and t.max_model_bytes is not None]
    if not points:
        return None
    return plots.field_plot, (points, boxes, f"{dataset}: int8 test accuracy against int8 model bytes",
                              "int8 model bytes (log scale)", "int8 test accuracy (%), mean and min-max over seeds")


def _int8_figure(dataset: str, svg: str) -> FieldFigure | None:
    if not svg:
        return None
    caption = ("The same configurations deployed (bench deploy): mean int8 top-1 on the test set against the "
               "int8 model's stored bytes (weights at one byte, biases, scales), the bar spanning the seeds; "
               "shaded boxes are targets with a byte budget. Only configurations with a deployment appear.")
    return FieldFigure(plots.inline_svg(svg, f"int8-{anchor(dataset)}", f"{dataset}: int8 accuracy against bytes"),
                       caption)


def _field_figure(dataset: str, configs: Sequence[Config], svg: str) -> FieldFigure | None:
    if not svg:
        return None
    hidden = sum(c.subset for c in configs)
    note = f" {hidden} configuration(s) run on a data subset are not plotted." if hidden else ""
    caption = ("One point per configuration at its mean final-epoch test accuracy, the bar spanning its seeds' min "
               "to max; shaded boxes are the targets (fewer parameters, at least the accuracy); the dotted line is "
               "the Pareto front. Click a point for its page." + note)
    return FieldFigure(plots.inline_svg(svg, f"field-{anchor(dataset)}", f"{dataset}: accuracy against parameters"),
                       caption)


def _time_curve(label: str, records: list[RunRecord], goal: float) -> plots.TimeCurve | None:
    """Mean test accuracy against wall seconds: epoch times, after the start-up the wall time adds."""
    if not any(e.seconds for r in records for e in r.epochs):
        return None
    overheads = []
    for r in records:
        wall = r.wall_seconds
        if wall is not None:
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
            by_class.setdefault(hardware_class(record), []).append(record)
        for hardware, records in by_class.items():
            curve = _time_curve(config.label, records, target.min_test_acc)
            if curve is not None:
                names = "; ".join(sorted({hardware_of(r) for r in records}))
                title = hardware if hardware == names else f"{hardware}: {names}"
                panels.setdefault(hardware, plots.TimePanel(title)).curves.append(curve)
    for hardware, panel in panels.items():
        panel.curves.sort(key=lambda c: (c.reached is None, c.reached or 0.0, -c.accs[-1]))
        panel.left_out = max(0, len(panel.curves) - MAX_TIME_CURVES)
        del panel.curves[MAX_TIME_CURVES:]
        budget = target.time_budget(hardware)
        panel.budget = float(budget) if budget is not None else None
    return [panels[k] for k in sorted(panels)]


# --- a configuration's page ----------------------------------------------------------------------

Pairs = list[tuple[str, object]]  # a key/value table's rows (a None value is left out)


@dataclass(frozen=True)
class HeatCell:
    count: int
    style: str
    title: str


@dataclass(frozen=True)
class HeatRow:
    name: str
    cells: list[HeatCell]


@dataclass(frozen=True)
class HeatMap:
    """The confusion matrix summed over seeds: rows are the true class, shaded by their share of the row."""

    caption: str
    columns: list[str]
    rows: list[HeatRow]


GridState = Literal["no weights", "skipped", "drawn", "hint"]


@dataclass(frozen=True)
class Grid:
    """The misclassified-images grid of a configuration's first seed with weights, or why there is none."""

    state: GridState
    record: RunRecord | None = None
    src: str = ""  # the PNG, relative to the page
    note: str = ""  # what the grid shows, or why it was skipped


@dataclass(frozen=True)
class ConfigView:
    """What ``report-config.html`` shows of one configuration."""

    config: Config
    summary: str
    facts: Pairs
    targets: list[list[Cell]]
    seeds: list[list[Cell]]
    superseded: str
    confusion: HeatMap | None
    per_class: list[list[Cell]]
    misclassified: Grid
    recipe: Pairs
    command: str | None
    first: RunRecord
    machine: Pairs
    other_hardware: str


def config_page(config: Config, grid: Grid) -> str:
    """``runs/<slug>.html``: everything about one configuration."""
    g, r = config.group, config.group.first
    view = ConfigView(
        config=config, summary=_summary_line(g), facts=_summary_facts(g), targets=_target_cells(config),
        seeds=_seed_cells(g.records, g.verified), superseded=", ".join(x.run_id for x in g.superseded),
        confusion=_heat_map(g.records), per_class=_per_class_cells(g.records), misclassified=grid,
        recipe=[("summary", recipe_text(r.recipe)), *r.recipe.items()], command=r.command, first=r,
        machine=_machine_pairs(r), other_hardware="; ".join(sorted({hardware_of(x) for x in g.records[1:]}
                                                                    - {hardware_of(r)})),
    )
    return page("report-config.html", f"{config.label} on {r.dataset}", view=view)


def _summary_line(g: lb.Group) -> str:
    std = g.std_final()
    return (f"Final test accuracy {pct(g.mean_final(), 3)}" + (f" \u00b1 {pct(std)}" if std is not None else "")
            + f" (min {pct(min(g.finals))}, max {pct(max(g.finals))}) over {len(g.records)} seed(s).")


def _summary_facts(g: lb.Group) -> Pairs:
    r = g.first
    return [
        ("model", r.model), ("dataset", r.dataset), ("parameters", f"{g.params():,}"),
        ("normalizer", r.normalizer), ("augmentation", r.augmentation), ("loader", r.loader),
        ("precision", precision_text(r)),
        ("device", device_kind(r)), ("recipe", recipe_text(r.recipe)), ("epochs", g.epochs_run()),
        ("best-epoch accuracy (mean)", pct(g.mean_best())),
        ("95% confidence interval of the mean", render.interval_text(g.summary().ci_low, g.summary().ci_high)),
        ("verified seeds", f"{len(g.verified_runs())} of {len(g.records)}"
         + (f": {'; '.join(g.verified_where())}" if g.verified_where() else "")),
        ("img/s", render.speed_text(g.images_per_s(), g.device_shared_by(), g.fused_seeds())),
        ("hardware", g.hardware()), ("train / test images", f"{r.train_images} / {r.test_images}"),
    ]


def _target_cells(config: Config) -> list[list[Cell]]:
    return [[Cell(row.target.id, href=f"../index.html#{section_id(row.target.id)}"), Cell(row.target.rule()),
             Cell(row.status, cls=f"status {status_class(row.status)}"),
             Cell(_p_text(row.group.p_reaching(row.target.min_test_acc))),
             Cell("-" if row.reached_epoch is None else row.reached_epoch, row.reached_epoch),
             Cell(seconds_text(row.reached_seconds), row.reached_seconds)]
            for row in config.rows if row.target is not None]


def _p_text(p: float | None) -> str:
    return "-" if p is None else f"{p:.3g}"


def _seed_cells(records: Sequence[RunRecord], verified: dict[str, list[dict[str, Any]]]) -> list[list[Cell]]:
    """One row per seed; its swatch is its colour on the curves plot."""
    cells = []
    for i, r in enumerate(records):
        seconds = r.wall_seconds if r.wall_seconds is not None else r.total_seconds
        cells.append([
            Cell(r.seed, i, swatch=plots.PALETTE[i % len(plots.PALETTE)]), Cell(r.run_id),
            Cell(pct(r.final_test_acc), r.final_test_acc), Cell(pct(r.best_test_acc), r.best_test_acc),
            Cell(r.best_epoch or "-", r.best_epoch), Cell(r.n_epochs, r.n_epochs), Cell(r.status),
            Cell(seconds_text(seconds), seconds),
            Cell("-" if r.images_per_s is None else f"{r.images_per_s:,.0f}", r.images_per_s),
            Cell(r.created or "-"), Cell(r.weights or "-"),
            Cell("; ".join(sorted({str(v.get("verdict")) for v in verified.get(r.run_id, [])})) or "-"),
        ])
    return cells


def _heat_map(records: Sequence[RunRecord]) -> HeatMap | None:
    """The confusion matrices of the seeds shaped like the first one, summed (None: none recorded)."""
    matrices = [r.confusion for r in records if r.confusion]
    if not matrices:
        return None
    shape = [len(row) for row in matrices[0]]
    same = [m for m in matrices if [len(row) for row in m] == shape]
    total = [[sum(m[i][j] for m in same) for j in range(width)] for i, width in enumerate(shape)]
    width = max([len(total), *shape])  # a record may hold a matrix that is not square
    names = class_names(records[0])
    names = names + [str(i) for i in range(len(names), width)]
    off = [v / max(1, sum(row)) for i, row in enumerate(total) for j, v in enumerate(row) if i != j]
    worst = max(off, default=0.0) or 1.0
    rows = [HeatRow(names[i], [_heat_cell(names[i], names[j], v, max(1, sum(row)), i == j, worst)
                               for j, v in enumerate(row)]) for i, row in enumerate(total)]
    caption = (f"Final epoch, summed over {len(same)} seed(s); rows are the true class, columns the prediction. "
               "Green: correct; red: the larger share of a row's images predicted as that class.")
    return HeatMap(caption, names[:width], rows)


def _heat_cell(true: str, predicted: str, count: int, row_total: int, diagonal: bool, worst: float) -> HeatCell:
    share = count / row_total
    if diagonal:
        style = f"background: rgba(26, 127, 55, {0.15 + 0.45 * share:.3f})"
    else:
        style = f"background: rgba(207, 34, 46, {0.75 * min(1.0, share / worst):.3f})" if count else ""
    return HeatCell(count, style, f"true {true}, predicted {predicted}: {count} ({share:.2%} of the row)")


def _per_class_cells(records: Sequence[RunRecord]) -> list[list[Cell]]:
    cells = []
    for name in dict.fromkeys(name for r in records for name in r.per_class_acc):
        values = [float(r.per_class_acc[name]) for r in records if name in r.per_class_acc]
        mean = statistics.fmean(values)
        cells.append([Cell(name), Cell(pct(mean), mean), Cell(pct(min(values)), min(values)),
                      Cell(pct(max(values)), max(values))])
    return cells


def _misclassified(config: Config, output: _Output, make: Misclassified | None, notes: list[str]) -> Grid:
    """The grid of the first seed that saved weights: kept from a previous build, drawn by ``make``, or a hint.
    A grid that cannot be made (no dataset, a model that fails to build) is a note; a failed write is an error."""
    with_weights = [r for r in config.group.records if r.weights]
    if not with_weights:
        return Grid("no weights")
    record = with_weights[0]
    name = f"runs/{anchor(record.run_id)}-misclassified.png"
    path = output.out / name
    note = ""
    if make is not None and not path.is_file():
        try:
            note = make(record, path)
        except Exception as exc:
            if _written_by(exc, output.out):
                raise
            message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            notes.append(f"{config.label}: no misclassified grid ({message})")
            return Grid("skipped", record, note=message)
    if path.is_file():
        output.keep(path)
        return Grid("drawn", record, src=name.split("/", 1)[1], note=note)
    return Grid("hint", record)


def _machine_pairs(r: RunRecord) -> Pairs:
    """The first seed's machine: device, hardware, threads, times, and what the record says of versions,
    git and plugins."""
    return [
        ("device", r.device), ("hardware", hardware_of(r)), ("hardware class", hardware_class(r)),
        ("threads", r.threads), ("wall seconds", r.wall_seconds), ("total epoch seconds", r.total_seconds),
        *((f"machine.{k}", v) for k, v in r.machine.items()),
        *((f"versions.{k}", v) for k, v in r.versions.items()),
        *((f"git.{k}", v) for k, v in r.git.items()),
        *((f"plugin.{kind}", f"{p.get('plugin')} ({p.get('distribution') or 'local'} {p.get('version') or ''})"
           .replace(" )", ")")) for kind, p in r.plugins.items() if isinstance(p, dict)),
    ]
