"""Loader throughput benchmarks: img/s per (dataset, loader, augmentation) and ratios.

Not part of the default run (marked ``benchmark_suite``). Run and save JSON with::

    pytest tests/benchmarks -m benchmark_suite --benchmark-enable \
        --benchmark-json results/benchmarks/loaders.json

The JSON gets a ``loader_throughput`` section (img/s and ratios); the same table is
printed at the end of the run.
"""

from __future__ import annotations

from typing import Any

# the pipeline the seeds used, per dataset: the baseline of the ratios
SEEDS_PIPELINE = {"mnist": ("torchvision", "rotate10-tv"), "cifar10": ("torchvision", "cifar-album")}


def summarize(rates: dict[tuple[str, str, str], float]) -> list[dict[str, Any]]:
    """One row per case: img/s, ratio to the seeds' pipeline, and ffcv's ratio to memory (same augmentation)."""
    rows = []
    for (dataset, loader, aug), rate in sorted(rates.items()):
        seeds = rates.get((dataset, *SEEDS_PIPELINE.get(dataset, ("", ""))))
        memory = rates.get((dataset, "memory", aug))
        rows.append({
            "dataset": dataset, "loader": loader, "augmentation": aug, "img_per_s": round(rate),
            "x_seeds_pipeline": round(rate / seeds, 2) if seeds else None,
            "x_memory": round(rate / memory, 2) if memory and loader != "memory" else None,
        })
    return rows


def pytest_benchmark_update_json(config: Any, benchmarks: Any, output_json: dict[str, Any]) -> None:
    rates = {}
    for bench in output_json.get("benchmarks", []):
        info = bench.get("extra_info", {})
        if "dataset" in info and "images" in info and bench.get("stats", {}).get("median"):
            rate = info["images"] / bench["stats"]["median"]
            info["img_per_s"] = round(rate)
            rates[info["dataset"], info["loader"], info["augmentation"]] = rate
    if rates:
        output_json["loader_throughput"] = {
            "baseline": "x_seeds_pipeline: ratio to "
            + ", ".join(f"{dataset}: {loader}+{aug}" for dataset, (loader, aug) in SEEDS_PIPELINE.items()),
            "rows": summarize(rates),
        }
    from test_fused_cpu import fused_summary  # tests/benchmarks is on sys.path

    if fused := fused_summary(output_json):
        output_json["fused_cpu"] = fused


def pytest_terminal_summary(terminalreporter: Any, config: Any) -> None:
    rates = getattr(config, "cnnbench_loader_rates", None)
    if not rates:
        return
    from tabulate import tabulate

    terminalreporter.write_sep("-", "loader throughput (median epoch, img/s)")
    terminalreporter.write_line(tabulate(summarize(rates), headers="keys"))
