"""``bench deploy``: export trained runs to ONNX, quantize them to int8 and measure what they are worth
deployed. Light at import time (click only); torch, onnx and onnxruntime load inside the command."""

from __future__ import annotations

import importlib.util
import signal
from pathlib import Path
from typing import Any

import click

from cnnbench.cli.verify import RESULTS_DIR, select_runs
from cnnbench.deploy import store
from cnnbench.deploy.pipeline import DeployOptions, deploy_run
from cnnbench.deploy.quantize import CALIBRATION_METHODS, QuantSettings
from cnnbench.errors import BenchError, UsageError, on_sigterm
from cnnbench.formatting import pct
from cnnbench.registry import registry_from

NEEDS = ("onnx", "onnxruntime", "onnxscript")
INSTALL = "pip install 'cnnbench[deploy]' (onnx, onnxruntime, onnxscript)"


def check_installed() -> None:
    missing = [name for name in NEEDS if importlib.util.find_spec(name) is None]
    if missing:
        raise UsageError(f"bench deploy needs {', '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} "
                         f"not installed: {INSTALL}")


def summary_row(result: dict[str, Any]) -> list[Any]:
    fp32, int8 = result["fp32"], result["int8"]
    return [
        result["model"], result["run_id"].split("-")[0], f"{result['params']:,}", pct(fp32["acc"]), pct(int8["acc"]),
        f"{-int8['drop'] * 100:+.2f}", f"{int8['model_bytes']['total']:,}", f"{int8['file_bytes']:,}",
        f"{fp32['latency']['median_ms']:.3f}", f"{int8['latency']['median_ms']:.3f}",
        f"{int8['throughput']['images_per_s']:,.0f}", f"{int8['peak_activation']['bytes']:,}",
    ]


HEADERS = ["model", "run", "params", "fp32 acc", "int8 acc", "int8-fp32 pts", "int8 bytes", "int8 file",
           "fp32 ms", "int8 ms", "int8 img/s", "peak act B"]


@click.command()
@click.argument("runs", nargs=-1, required=True, metavar="RUN...")
@RESULTS_DIR
@click.option("--data-dir", type=click.Path(file_okay=False), help="Dataset folder [$BENCH_DATA_DIR or ./data].")
@click.option("--out", "out_dir", type=click.Path(file_okay=False),
              help="Where RUN.deploy.json and RUN.deploy/ go [the results folder, beside the record].")
@click.option("--calibration", type=click.IntRange(min=1, max=10_000_000), default=1000, show_default=True,
              help="Training images that calibrate the int8 activation ranges (never test images).")
@click.option("--calibration-method", type=click.Choice(CALIBRATION_METHODS), default="minmax", show_default=True,
              help="How ranges are chosen from the calibration activations (ONNX Runtime's calibrators).")
@click.option("--per-tensor", is_flag=True, help="One scale per weight tensor instead of one per output channel.")
@click.option("--threads", type=click.IntRange(min=1, max=1024), default=1, show_default=True,
              help="ONNX Runtime threads for the batch-1 latency.")
@click.option("--throughput-batch", type=click.IntRange(min=1, max=65_536), default=1024, show_default=True,
              help="Batch size of the throughput measurement (every core).")
@click.option("--missing", is_flag=True, help="Only runs that have no deployment yet.")
@click.pass_context
def deploy(ctx: click.Context, runs: tuple[str, ...], results_dir: str, data_dir: str | None, out_dir: str | None,
           calibration: int, calibration_method: str, per_tensor: bool, threads: int, throughput_batch: int,
           missing: bool) -> None:
    """Export each RUN (id, prefix, pattern, model name or path) to ONNX with batch norms folded, check ONNX
    Runtime against torch on the test set, quantize to int8 (static, QDQ, calibrated on training images)
    and measure int8 accuracy, model bytes, batch-1 latency (fp32 and int8, median of 5 windows),
    throughput and peak activation memory on this machine.

    Results go into RUN.deploy.json beside the record with the .onnx files in RUN.deploy/; the record is
    never changed. Exit 1 when a run could not be deployed.
    """
    from tabulate import tabulate  # lazy: tabulate

    check_installed()
    selected = select_runs(runs, Path(results_dir))
    out = Path(out_dir) if out_dir else None
    if missing:
        selected = [(p, r) for p, r in selected if store.deployment_of(out or p.parent, r.run_id) is None]
    options = DeployOptions(
        quant=QuantSettings(calibration_images=calibration, method=calibration_method,  # type: ignore[arg-type]
                            per_channel=not per_tensor),
        threads=threads, throughput_batch=throughput_batch,
    )
    signal.signal(signal.SIGTERM, on_sigterm)  # a kill unwinds: the temporary folder goes with it
    registry = registry_from(ctx)
    rows, failed = [], []
    for path, record in selected:
        try:
            written, result = deploy_run(record, path.parent, registry, data_dir, out or path.parent, options)
        except BenchError as exc:
            if len(selected) == 1:
                raise
            click.echo(f"error: {exc}", err=True)
            failed.append(record.run_id)
            continue
        fp32, int8 = result["fp32"], result["int8"]
        agree = fp32["agreement_with_torch"]
        click.echo(f"{record.run_id}: fp32 {pct(fp32['acc'])} (ONNX Runtime vs torch: max |diff| "
                   f"{agree['max_abs_diff']:.1e}, argmax agreement {pct(agree['argmax_agreement'])}), int8 "
                   f"{pct(int8['acc'])}, {int8['model_bytes']['total']:,} bytes; written to {written}")
        rows.append(summary_row(result))
    if rows:
        click.echo(tabulate(rows, headers=HEADERS, disable_numparse=True))
    if failed:
        raise BenchError(f"{len(failed)} of {len(selected)} runs not deployed")
    if not selected:
        click.echo("nothing to deploy: every selected run has a deployment (--missing)")


COMMANDS = [deploy]
