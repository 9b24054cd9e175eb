"""One run deployed, start to end: weights -> folded fp32 ONNX (checked against torch) -> int8
(calibrated on training images) -> accuracy, agreement, latency, throughput, bytes, activation memory."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cnnbench.datadir import resolve_data_dir
from cnnbench.deploy import export, measure, store
from cnnbench.deploy.quantize import CORE_OPS, QuantSettings, calibration_indices, quantize
from cnnbench.errors import BenchError, UsageError
from cnnbench.records import resolve
from cnnbench.registry import Registry, first_line
from cnnbench.runrecord import RunRecord
from cnnbench.training import provenance


class DeployFailed(BenchError):
    """A step of the deployment failed in the libraries it drives (exporter, quantizer, runtime)."""


TOOLS = ("torch", "onnx", "onnxruntime", "onnxscript", "numpy", "cnnbench")


@dataclass(frozen=True)
class DeployOptions:
    quant: QuantSettings = QuantSettings()
    threads: int = 1  # latency: batch 1 on this many threads
    throughput_threads: int = 0  # 0: every core
    throughput_batch: int = measure.THROUGHPUT_BATCH


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def normalized(images: Any, mean: tuple[float, ...], std: tuple[float, ...]) -> Any:
    """uint8 ``N x C x H x W`` tensor -> float32 numpy, normalized as the loaders do."""
    import numpy as np  # lazy: numpy

    x = images.numpy().astype(np.float32) / np.float32(255)
    m = np.asarray(mean, np.float32).reshape(1, -1, 1, 1)
    s = np.asarray(std, np.float32).reshape(1, -1, 1, 1)
    return np.ascontiguousarray((x - m) / s)


def check_calibration(count: int, train_size: int, dataset: str) -> None:
    if count < 1:
        raise UsageError("--calibration must be at least 1 image")
    if train_size and count > train_size:
        raise UsageError(f"--calibration {count:,} is more than the {train_size:,} training images of {dataset}; "
                         "calibration uses training images only")


def deploy_run(record: RunRecord, results_dir: Path, registry: Registry, data_dir: str | Path | None,
               out_dir: Path, options: DeployOptions) -> tuple[Path, dict[str, Any]]:
    """Deploy one run; returns the deployment file and its contents. Everything that can be checked
    (weights, model, calibration count, output folder) is checked before the data is read."""
    started = time.perf_counter()
    dataset = registry.dataset(record.dataset)
    check_calibration(options.quant.calibration_images, dataset.train_size, dataset.name)
    weights = export.weights_path(record, results_dir)
    model = export.trained_model(record, registry, weights)
    staged = store.staging_dir(out_dir, record.run_id)
    try:
        load_before = os.getloadavg()[0]
        try:
            result = _measure(record, model, dataset, resolve_data_dir(data_dir), staged, options)
        except BenchError:
            raise
        except Exception as exc:  # the exporter's graph failing in ONNX Runtime, a quantizer bug: one line
            raise DeployFailed(f"run {record.run_id} ({record.model}, {record.normalizer} norm) could not be "
                               f"deployed: {type(exc).__name__}: {first_line(exc)[:300]}") from exc
        # latency and throughput are only as good as the machine was quiet: say how busy it was
        result["load_average_1min"] = {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2)}
        result["seconds"] = round(time.perf_counter() - started, 1)
        result["weights"] = record.weights
        return store.publish(out_dir, record.run_id, staged, result), result
    finally:
        shutil.rmtree(staged, ignore_errors=True)


def _measure(record: RunRecord, model: Any, dataset: Any, data_dir: Path, staged: Path,
             options: DeployOptions) -> dict[str, Any]:
    # --- fold and export first: a model that cannot be exported fails before any data is read ----
    folded = export.fold_batch_norms(model)
    fp32_path, int8_path = staged / "fp32.onnx", staged / "int8.onnx"
    export.export_onnx(folded.model, dataset.image_shape, fp32_path, record.model)

    load = resolve(dataset.load)
    test_x, test_y = load(data_dir, "test")
    train_x, _ = load(data_dir, "train")
    check_calibration(options.quant.calibration_images, len(train_x), dataset.name)
    x_test, y_test = normalized(test_x, dataset.mean, dataset.std), test_y.numpy()
    calibration = normalized(train_x[calibration_indices(len(train_x), options.quant.calibration_images)],
                             dataset.mean, dataset.std)
    del train_x

    # --- torch (the trained model and its folded twin) against ONNX Runtime ----------------------
    torch_logits = measure.torch_outputs(model, x_test)
    folded_logits = measure.torch_outputs(folded.model, x_test)
    cores = options.throughput_threads or os.cpu_count() or 1
    fp32_eval = measure.session(fp32_path, cores, record.model)
    fp32_logits = measure.outputs(fp32_eval, x_test)

    # --- int8 ----------------------------------------------------------------------------------
    settings = options.quant
    quantize(fp32_path, int8_path, calibration, settings, record.model)
    try:
        int8_eval = measure.session(int8_path, cores, record.model)
        int8_logits = measure.outputs(int8_eval, x_test)
    except Exception as exc:  # ONNX Runtime cannot run the graph its quantizer made: quantize the core ops only
        settings = dataclasses.replace(settings, op_types=CORE_OPS, note=(
            f"quantizing every op gave a graph ONNX Runtime could not run ({type(exc).__name__}: "
            f"{first_line(exc)[-160:]}); only {', '.join(CORE_OPS)} quantized"))
        quantize(fp32_path, int8_path, calibration, settings, record.model)
        int8_eval = measure.session(int8_path, cores, record.model)
        int8_logits = measure.outputs(int8_eval, x_test)

    # --- speed and memory ----------------------------------------------------------------------
    one = x_test[0]
    speed = {}
    for name, path, fast in (("fp32", fp32_path, fp32_eval), ("int8", int8_path, int8_eval)):
        single = measure.session(path, options.threads, record.model)
        speed[name] = {"latency": measure.latency_ms(single, one), "latency_threads": options.threads,
                       "throughput": measure.throughput(fast, x_test, options.throughput_batch),
                       "throughput_threads": cores}
    params = sum(p.numel() for p in model.parameters())
    deployed_params = sum(p.numel() for p in folded.model.parameters())
    fp32_acc = measure.accuracy(fp32_logits, y_test)
    int8_acc = measure.accuracy(int8_logits, y_test)
    return {
        "run_id": record.run_id,
        "model": record.model,
        "dataset": record.dataset,
        "params": params,
        "deployed_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "test_images": int(len(y_test)),
        "record_final_test_acc": record.final_test_acc,
        "record_tta": record.recipe.get("tta", "none"),
        "batch_norms": {"in_model": folded.batch_norms, "folded": folded.folded, "note": folded.note},
        "torch": {"acc": measure.accuracy(torch_logits, y_test),
                  "folded_agreement": measure.agreement(torch_logits, folded_logits).as_json()},
        "fp32": {
            "acc": fp32_acc,
            "agreement_with_torch": measure.agreement(torch_logits, fp32_logits).as_json(),
            "file": "fp32.onnx", "file_bytes": fp32_path.stat().st_size, "file_sha256": _sha256(fp32_path),
            "params": deployed_params, "model_bytes": 4 * deployed_params,
            "peak_activation": measure.peak_activation_bytes(fp32_path, 4),
            **speed["fp32"],
        },
        "int8": {
            "acc": int8_acc,
            "drop": fp32_acc - int8_acc,
            "agreement_with_fp32": measure.agreement(fp32_logits, int8_logits).as_json(),
            "file": "int8.onnx", "file_bytes": int8_path.stat().st_size, "file_sha256": _sha256(int8_path),
            "model_bytes": measure.model_bytes(int8_path),
            "peak_activation": measure.peak_activation_bytes(fp32_path, 1),
            **speed["int8"],
        },
        "quantization": settings.as_json(),
        "tools": provenance.distribution_versions(TOOLS),
        "machine": provenance.machine(),
        "cpu_flags_digest": hashlib.sha256(" ".join(provenance.cpu_flags()).encode()).hexdigest()[:16],
        "git": provenance.git_commit(),
        "files_dir": store.files_dir(Path("."), record.run_id).name,
    }
