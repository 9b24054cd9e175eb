"""Reports on one run (or two): finding the record, curves, misclassified images, tables.

Only ``misclassified`` needs torch (it rebuilds the model from the saved weights); the
tables and ``compare`` read the JSON record alone, and ``plot`` needs only matplotlib.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .errors import BenchError
from .leaderboard import hardware_of, recipe_text
from .runrecord import read_record

LISTED = 15  # run ids named in an error message before "... and N more"


def _valid_ids(ids: list[str]) -> str:
    if not ids:
        return "(no records)"
    shown = ", ".join(ids[-LISTED:])
    return shown if len(ids) <= LISTED else f"{shown} ... and {len(ids) - LISTED} more (see `bench leaderboard`)"


def resolve_run(ref: str, results_dir: Path | str = "results") -> tuple[Path, dict[str, Any]]:
    """A run record from a path to its JSON file, its run id, or a unique prefix of the id."""
    as_path = Path(ref)
    if as_path.suffix == ".json" and as_path.is_file():
        path = as_path
    else:
        root = Path(results_dir)
        ids = sorted(p.stem for p in root.glob("*.json")) if root.is_dir() else []
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


def default_out(record: dict[str, Any], kind: str) -> Path:
    return Path("bench-out") / f"{record['run_id']}-{kind}.png"


# --- plot -----------------------------------------------------------------------------


def plot_curves(record: dict[str, Any], out: Path) -> Path:
    """PNG of train and test loss (left) and accuracy (right) per epoch."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    from matplotlib.ticker import MaxNLocator

    epochs = record["epochs"]
    xs = [e["epoch"] for e in epochs]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, metric, label in ((ax_loss, "loss", "loss (NLL)"), (ax_acc, "acc", "accuracy (%)")):
        for split, style in (("train", "o-"), ("test", "s-")):
            values = [e.get(f"{split}_{metric}") for e in epochs]
            if metric == "acc":
                values = [None if v is None else 100 * v for v in values]
            ax.plot(xs, values, style, label=split, markersize=4)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
    best = record.get("best_epoch")
    if best:
        ax_acc.axvline(best, color="grey", linestyle=":", label=None)
        ax_acc.annotate(
            f"best {record['best_test_acc']:.2%} (epoch {best})", xy=(best, 100 * record["best_test_acc"]),
            xytext=(0.35, 0.12), textcoords="axes fraction", arrowprops={"arrowstyle": "->", "color": "grey"},
        )
    ax_loss.set_yscale("log")
    fig.suptitle(
        f"{record['model']} seed {record.get('seed')} on {record['dataset']}: "
        f"final test {record['final_test_acc']:.2%}, {record['params']:,} params\n{record['run_id']}",
        fontsize=10,
    )
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


# --- misclassified ----------------------------------------------------------------------


def predict_test_set(record: dict[str, Any], record_path: Path, registry: Any, data_dir: str | None) -> dict[str, Any]:
    """Rebuild the run's model from its weights and predict the test images the run was scored on."""
    if not record.get("weights"):
        raise BenchError(f"run {record['run_id']} saved no weights, so its predictions cannot be rebuilt")
    weights = record_path.parent / record["weights"]
    if not weights.is_file():
        raise BenchError(f"weights file {weights} of run {record['run_id']} is missing")

    import torch

    from .records import LoaderRequest, resolve
    from .train import autocast

    dataset = registry.dataset(record["dataset"])
    model = registry.create_model(record["model"], record["normalizer"], (record.get("recipe") or {}).get("dropout"))
    try:
        model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    except (RuntimeError, OSError, EOFError) as exc:
        raise BenchError(f"cannot load {weights} into {record['model']}: {str(exc).splitlines()[0]}") from exc
    model.eval()
    images, labels = resolve(dataset.load)(data_dir, "test")
    n = int(record.get("test_images") or len(labels))
    images, labels = images[:n], labels[:n]
    device = torch.device("cpu")
    request = LoaderRequest(
        dataset=dataset, split="test", images=images, labels=labels, batch_size=500, shuffle=False,
        seed=int(record.get("seed") or 0), device=device,
    )
    batches = resolve(registry.loader("memory").factory)(request)
    preds = []
    with torch.no_grad():
        for x, _ in batches:
            with autocast(device, record.get("precision", "fp32")):
                preds.append(model(x).float().argmax(1))
    pred = torch.cat(preds)
    return {"images": images, "labels": labels, "pred": pred, "class_names": class_names(record, dataset)}


def class_names(record: dict[str, Any], dataset: Any = None) -> list[str]:
    if dataset is not None and dataset.class_names:
        return list(dataset.class_names)
    if record.get("per_class_acc"):
        return list(record["per_class_acc"])
    return [str(i) for i in range(len(record.get("confusion") or []))]


def misclassified_grid(result: dict[str, Any], record: dict[str, Any], out: Path, limit: int = 48) -> tuple[Path, int]:
    """PNG grid of the first ``limit`` misclassified test images; returns the path and the error count."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

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
        f"{record['model']} ({record['run_id']}): {len(wrong)} of {total} test images misclassified"
        f"{'' if len(wrong) <= limit else f', first {limit} shown'}",
        fontsize=9,
    )
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out, len(wrong)


def recorded_errors(record: dict[str, Any]) -> int | None:
    confusion = record.get("confusion")
    if not confusion:
        return None
    return sum(v for i, row in enumerate(confusion) for j, v in enumerate(row) if i != j)


# --- tables ---------------------------------------------------------------------------


def per_class_table(record: dict[str, Any], tablefmt: str = "simple") -> str:
    from tabulate import tabulate

    confusion = record.get("confusion") or []
    names = class_names(record)
    rows = []
    for i, name in enumerate(names):
        acc = (record.get("per_class_acc") or {}).get(name)
        support = sum(confusion[i]) if i < len(confusion) else None
        correct = confusion[i][i] if i < len(confusion) else None
        rows.append([name, "-" if acc is None else f"{acc:.2%}", correct, support])
    return tabulate(rows, headers=["class", "accuracy", "correct", "images"], tablefmt=tablefmt)


def confusion_table(record: dict[str, Any], tablefmt: str = "simple") -> str:
    from tabulate import tabulate

    confusion = record.get("confusion")
    if not confusion:
        return "(this record has no confusion matrix)"
    names = class_names(record)
    rows = [[f"{names[i]}", *row] for i, row in enumerate(confusion)]
    return tabulate(rows, headers=["true \\ pred", *names], tablefmt=tablefmt)


def epochs_table(record: dict[str, Any], tablefmt: str = "simple") -> str:
    from tabulate import tabulate

    rows = [
        [e["epoch"], f"{e.get('train_loss', float('nan')):.4f}", f"{e.get('train_acc', 0):.2%}",
         f"{e.get('test_loss', float('nan')):.4f}", f"{e['test_acc']:.2%}", f"{e.get('lr', 0):.4g}",
         f"{e.get('seconds', 0):.1f}", f"{e.get('images_per_s', 0):,.0f}"]
        for e in record["epochs"]
    ]
    return tabulate(rows, headers=["epoch", "train loss", "train acc", "test loss", "test acc", "lr", "s", "img/s"],
                    tablefmt=tablefmt, disable_numparse=True)


def summary_pairs(record: dict[str, Any], command: bool = True) -> list[tuple[str, Any]]:
    """The facts about a run worth a line each, in a fixed order (shared by show and compare)."""
    recipe = record.get("recipe") or {}
    versions = record.get("versions") or {}
    return [
        ("run id", record["run_id"]),
        ("model", record["model"]),
        ("dataset", record["dataset"]),
        ("normalizer", record["normalizer"]),
        ("augmentation", record["augmentation"]),
        ("loader", record["loader"]),
        ("precision", record["precision"]),
        ("seed", record.get("seed")),
        *((f"recipe.{k}", v) for k, v in recipe.items()),
        ("params", f"{record['params']:,}"),
        ("epochs run", record.get("epochs_run", len(record["epochs"]))),
        ("final test acc", f"{record['final_test_acc']:.2%}"),
        ("best test acc", f"{record['best_test_acc']:.2%} (epoch {record.get('best_epoch')})"),
        ("train / test images", f"{record.get('train_images')} / {record.get('test_images')}"),
        ("total seconds", record.get("total_seconds")),
        ("img/s (median epoch)", record.get("images_per_s")),
        ("device", record.get("device")),
        ("hardware", hardware_of(record)),
        ("torch", versions.get("torch")),
        ("git", (record.get("git") or {}).get("commit")),
        ("stopped by", record.get("stopped_by")),
        *([("command", record.get("command"))] if command else []),
    ]


def show_text(record: dict[str, Any], target_lines: list[str] | None = None) -> str:
    from tabulate import tabulate

    parts = [tabulate([[k, v] for k, v in summary_pairs(record)], tablefmt="plain", disable_numparse=True),
             f"recipe: {recipe_text(record.get('recipe') or {})}"]
    if target_lines:
        parts.append("targets:\n" + "\n".join(f"  {line}" for line in target_lines))
    parts += ["epochs:\n" + epochs_table(record), "per-class accuracy (last epoch):\n" + per_class_table(record),
              "confusion matrix (last epoch; rows: true class):\n" + confusion_table(record)]
    return "\n\n".join(parts) + "\n"


def compare_text(a: dict[str, Any], b: dict[str, Any]) -> str:
    """Two runs side by side; ``*`` marks the lines that differ."""
    from tabulate import tabulate

    left, right = dict(summary_pairs(a, command=False)), dict(summary_pairs(b, command=False))
    keys = list(dict.fromkeys([*left, *right]))
    facts = [["*" if left.get(k) != right.get(k) and k != "run id" else "", k, left.get(k, "-"), right.get(k, "-")]
             for k in keys]
    out = [tabulate(facts, headers=["", "", "A", "B"], tablefmt="simple", disable_numparse=True)]
    n = max(len(a["epochs"]), len(b["epochs"]))

    def acc(record: dict[str, Any], i: int) -> str:
        return f"{record['epochs'][i]['test_acc']:.2%}" if i < len(record["epochs"]) else "-"

    def delta(i: int) -> str:
        if i < len(a["epochs"]) and i < len(b["epochs"]):
            return f"{100 * (b['epochs'][i]['test_acc'] - a['epochs'][i]['test_acc']):+.2f}"
        return "-"

    out.append("test accuracy per epoch:\n" + tabulate(
        [[i + 1, acc(a, i), acc(b, i), delta(i)] for i in range(n)],
        headers=["epoch", "A", "B", "B-A (points)"], tablefmt="simple", disable_numparse=True))
    classes = list(dict.fromkeys([*(a.get("per_class_acc") or {}), *(b.get("per_class_acc") or {})]))
    if classes:
        pa, pb = a.get("per_class_acc") or {}, b.get("per_class_acc") or {}
        out.append("per-class accuracy (last epoch):\n" + tabulate(
            [[c, pct_or_dash(pa.get(c)), pct_or_dash(pb.get(c))] for c in classes],
            headers=["class", "A", "B"], tablefmt="simple", disable_numparse=True))
    return "\n\n".join(out) + "\n"


def pct_or_dash(value: float | None) -> str:
    return "-" if value is None else f"{value:.2%}"

