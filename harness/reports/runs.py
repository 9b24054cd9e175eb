"""Reports on one run (or two): finding the record, curves, misclassified images, tables.

Only ``misclassified`` needs torch (it rebuilds the model from the saved weights); the
tables and ``compare`` read the JSON record alone, and ``plot`` needs only matplotlib.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cnnbench.datadir import resolve_data_dir
from cnnbench.errors import BenchError, RecordError
from cnnbench.formatting import class_names, pct, per_class_table, pyplot, save_figure
from cnnbench.records import LoaderRequest, resolve
from cnnbench.runrecord import RunRecord, hardware_of, is_record_file, read_record, recipe_text

LISTED = 15  # run ids named in an error message before "... and N more"


def _valid_ids(ids: list[str]) -> str:
    if not ids:
        return "(no records)"
    shown = ", ".join(ids[-LISTED:])
    return shown if len(ids) <= LISTED else f"{shown} ... and {len(ids) - LISTED} more (see `bench leaderboard`)"


def resolve_run(ref: str, results_dir: Path | str = "results") -> tuple[Path, RunRecord]:
    """A run record from a path to its JSON file, its run id, or a unique prefix of the id."""
    as_path = Path(ref)
    if as_path.suffix == ".json" and as_path.is_file():
        path = as_path
    else:
        root = Path(results_dir)
        ids = sorted(p.stem for p in root.glob("*.json") if is_record_file(p)) if root.is_dir() else []
        matches = [i for i in ids if i == ref] or [i for i in ids if i.startswith(ref)]
        if not matches:
            raise BenchError(f"no run {ref!r} in {root}; valid run ids: {_valid_ids(ids)}")
        if len(matches) > 1:
            raise BenchError(f"run {ref!r} is ambiguous in {root}; it matches: {_valid_ids(matches)}")
        path = root / f"{matches[0]}.json"
    try:
        return path, read_record(path)
    except ValueError as exc:
        raise BenchError(f"{path}: unusable run record ({exc})") from exc


def default_out(record: RunRecord, kind: str) -> Path:
    return Path("bench-out") / f"{record.run_id}-{kind}.png"


# --- plot -----------------------------------------------------------------------------


def plot_curves(record: RunRecord, out: Path) -> Path:
    """PNG of train and test loss (left) and accuracy (right) per epoch."""
    from matplotlib.ticker import MaxNLocator  # lazy: matplotlib

    plt = pyplot()
    epochs = record.epochs
    xs = [e.epoch for e in epochs]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, metric, label in ((ax_loss, "loss", "loss (NLL)"), (ax_acc, "acc", "accuracy (%)")):
        for split, style in (("train", "o-"), ("test", "s-")):
            values = [getattr(e, f"{split}_{metric}") for e in epochs]
            if metric == "acc":
                values = [None if v is None else 100 * v for v in values]
            ax.plot(xs, values, style, label=split, markersize=4)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
    best = record.best_epoch
    if best:
        ax_acc.axvline(best, color="grey", linestyle=":", label=None)
        ax_acc.annotate(
            f"best {pct(record.best_test_acc)} (epoch {best})", xy=(best, 100 * record.best_test_acc),
            xytext=(0.35, 0.12), textcoords="axes fraction", arrowprops={"arrowstyle": "->", "color": "grey"},
        )
    ax_loss.set_yscale("log")
    fig.suptitle(
        f"{record.model} seed {record.seed} on {record.dataset}: "
        f"final test {pct(record.final_test_acc)}, {record.params:,} params\n{record.run_id}",
        fontsize=10,
    )
    return save_figure(fig, out)


# --- misclassified ----------------------------------------------------------------------


def predict_test_set(record: RunRecord, record_path: Path, registry: Any, data_dir: str | None) -> dict[str, Any]:
    """Rebuild the run's model from its weights and predict the test images the run was scored on."""
    if not record.weights:
        raise BenchError(f"run {record.run_id} saved no weights, so its predictions cannot be rebuilt")
    weights = record_path.parent / record.weights
    if not weights.is_file():
        raise BenchError(f"weights file {weights} of run {record.run_id} is missing")

    import torch  # lazy: torch

    from cnnbench.training.train import autocast, predict  # lazy: torch, numpy

    dataset = registry.dataset(record.dataset)
    model = registry.create_model(record.model, record.normalizer, record.recipe.get("dropout"))
    model.load_state_dict(load_weights(weights, record.model, model))
    model.eval()
    images, labels = resolve(dataset.load)(resolve_data_dir(data_dir), "test")
    n = int(record.test_images or len(labels))
    images, labels = images[:n], labels[:n]
    device = torch.device("cpu")
    request = LoaderRequest(
        dataset=dataset, split="test", images=images, labels=labels, batch_size=500, shuffle=False,
        seed=int(record.seed or 0), device=device,
    )
    batches = resolve(registry.loader("memory").factory)(request)
    preds = []
    with torch.no_grad():
        for x, _ in batches:
            with autocast(device, record.precision):
                preds.append(predict(model, x, record.recipe.get("tta", "none")).float().argmax(1))
    pred = torch.cat(preds)
    return {"images": images, "labels": labels, "pred": pred, "class_names": class_names(record, dataset)}


def misclassified_grid(result: dict[str, Any], record: RunRecord, out: Path, limit: int = 48) -> tuple[Path, int]:
    """PNG grid of the first ``limit`` misclassified test images; returns the path and the error count."""
    plt = pyplot()
    wrong = (result["pred"] != result["labels"]).nonzero().flatten().tolist()
    names = result["class_names"]
    shown = wrong[:limit]
    cols = min(8, max(1, len(shown)))
    rows = max(1, -(-len(shown) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(1.6 * cols, 1.85 * rows + 0.6), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, i in zip(axes.flat, shown, strict=False):
        image = result["images"][i].permute(1, 2, 0).numpy()
        if image.shape[2] == 1:
            ax.imshow(image[:, :, 0], cmap="gray", vmin=0, vmax=255)
        else:
            ax.imshow(image)
        true, pred = names[int(result["labels"][i])], names[int(result["pred"][i])]
        ax.set_title(f"#{i}\ntrue {true}\npred {pred}", fontsize=7, color="firebrick")
    total = len(result["labels"])
    fig.suptitle(
        f"{record.model} ({record.run_id}): {len(wrong)} of {total} test images misclassified"
        f"{'' if len(wrong) <= limit else f', first {limit} shown'}",
        fontsize=9,
    )
    return save_figure(fig, out), len(wrong)


def recorded_errors(record: RunRecord) -> int | None:
    """Off-diagonal total of the record's confusion matrix (``None`` without one)."""
    if not record.confusion:
        return None
    return sum(v for i, row in enumerate(record.confusion) for j, v in enumerate(row) if i != j)


# --- tables ---------------------------------------------------------------------------


def confusion_table(record: RunRecord, tablefmt: str = "simple") -> str:
    """The last epoch's confusion matrix; rows are the true class."""
    from tabulate import tabulate  # lazy: tabulate

    if not record.confusion:
        return "(this record has no confusion matrix)"
    names = class_names(record)
    rows = [[f"{names[i]}", *row] for i, row in enumerate(record.confusion)]
    return tabulate(rows, headers=["true \\ pred", *names], tablefmt=tablefmt)


def _fixed(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def epochs_table(record: RunRecord, tablefmt: str = "simple") -> str:
    """One line per epoch: losses, accuracies, learning rate, time and throughput ("-" where not recorded)."""
    from tabulate import tabulate  # lazy: tabulate

    rows = [
        [e.epoch, _fixed(e.train_loss, ".4f"), pct(e.train_acc), _fixed(e.test_loss, ".4f"), pct(e.test_acc),
         _fixed(e.lr, ".4g"), _fixed(e.seconds, ".1f"), _fixed(e.images_per_s, ",.0f")]
        for e in record.epochs
    ]
    return tabulate(rows, headers=["epoch", "train loss", "train acc", "test loss", "test acc", "lr", "s", "img/s"],
                    tablefmt=tablefmt, disable_numparse=True)


def summary_pairs(record: RunRecord, command: bool = True) -> list[tuple[str, Any]]:
    """The facts about a run worth a line each, in a fixed order (shared by show and compare)."""
    return [
        ("run id", record.run_id),
        ("model", record.model),
        ("dataset", record.dataset),
        ("normalizer", record.normalizer),
        ("augmentation", record.augmentation),
        ("loader", record.loader),
        ("precision", record.precision),
        ("seed", record.seed),
        *((f"recipe.{k}", v) for k, v in record.recipe.items()),
        ("params", f"{record.params:,}"),
        ("epochs run", record.n_epochs),
        ("final test acc", pct(record.final_test_acc)),
        ("best test acc", f"{pct(record.best_test_acc)} (epoch {record.best_epoch})"),
        ("train / test images", f"{record.train_images} / {record.test_images}"),
        *([("val images", record.val_images)] if record.val_images else []),
        ("total seconds", record.total_seconds),
        ("wall seconds", record.wall_seconds),
        ("img/s (median epoch)", record.images_per_s),
        ("fast path", ", ".join(f"{k} {v}" for k, v in record.fast_path.items()) or "-"),
        ("device", record.device),
        ("hardware", hardware_of(record)),
        ("torch", record.versions.get("torch")),
        ("git", record.git.get("commit")),
        ("stopped by", record.stopped_by),
        *([("command", record.command)] if command else []),
    ]


def show_text(record: RunRecord, target_lines: list[str] | None = None) -> str:
    """Everything ``bench show`` prints about one run."""
    from tabulate import tabulate  # lazy: tabulate

    parts = [tabulate([[k, v] for k, v in summary_pairs(record)], tablefmt="plain", disable_numparse=True),
             f"recipe: {recipe_text(record.recipe)}"]
    if target_lines:
        parts.append("targets:\n" + "\n".join(f"  {line}" for line in target_lines))
    parts += ["epochs:\n" + epochs_table(record), "per-class accuracy (last epoch):\n" + per_class_table(record),
              "confusion matrix (last epoch; rows: true class):\n" + confusion_table(record)]
    return "\n\n".join(parts) + "\n"


def compare_text(a: RunRecord, b: RunRecord) -> str:
    """Two runs side by side; ``*`` marks the lines that differ."""
    from tabulate import tabulate  # lazy: tabulate

    left, right = dict(summary_pairs(a, command=False)), dict(summary_pairs(b, command=False))
    keys = list(dict.fromkeys([*left, *right]))
    facts = [["*" if left.get(k) != right.get(k) and k != "run id" else "", k, left.get(k, "-"), right.get(k, "-")]
             for k in keys]
    out = [tabulate(facts, headers=["", "", "A", "B"], tablefmt="simple", disable_numparse=True)]
    n = max(len(a.epochs), len(b.epochs))

    def acc(record: RunRecord, i: int) -> str:
        return pct(record.epochs[i].test_acc) if i < len(record.epochs) else "-"

    def delta(i: int) -> str:
        if i < len(a.epochs) and i < len(b.epochs):
            return f"{100 * (b.epochs[i].test_acc - a.epochs[i].test_acc):+.2f}"
        return "-"

    out.append("test accuracy per epoch:\n" + tabulate(
        [[i + 1, acc(a, i), acc(b, i), delta(i)] for i in range(n)],
        headers=["epoch", "A", "B", "B-A (points)"], tablefmt="simple", disable_numparse=True))
    classes = list(dict.fromkeys([*a.per_class_acc, *b.per_class_acc]))
    if classes:
        out.append("per-class accuracy (last epoch):\n" + tabulate(
            [[c, pct(a.per_class_acc.get(c)), pct(b.per_class_acc.get(c))] for c in classes],
            headers=["class", "A", "B"], tablefmt="simple", disable_numparse=True))
    return "\n\n".join(out) + "\n"


def load_weights(path: Path, model_name: str, model: Any) -> dict[str, Any]:
    """A state dict that fits ``model``, from a file ``torch.load(weights_only=True)`` accepts.

    Empty, truncated, non-torch, pickled-code, oversized, non-regular (a FIFO) or wrongly shaped files
    are one ``RecordError`` line naming the file, in cnnbench's words (``checkpoint.load_torch_file``).
    """
    import torch  # lazy: torch

    from cnnbench.training.checkpoint import load_torch_file, weights_mismatch  # lazy: torch

    limit = 1 << 30  # far above a small CNN's weights (4 bytes a parameter); a larger file is refused unread
    try:
        state = load_torch_file(path, limit, "a loadable weights file")
    except FileNotFoundError:
        raise RecordError(f"weights file {path} is missing") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise RecordError(f"{path}: not a state dict of tensors")
    problem = weights_mismatch(state, model.state_dict())
    if problem:
        raise RecordError(f"{path}: its weights do not match model {model_name!r}: {problem}")
    return state
