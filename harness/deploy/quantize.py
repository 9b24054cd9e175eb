"""Static int8 quantization with ONNX Runtime: QDQ format, int8 weights (per channel by default,
symmetric) and int8 activations, calibrated on training images only.

The calibration images are a fixed random choice from the training split (seed 0), so a deployment
is repeatable and never sees a test image.
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from cnnbench.deploy.export import INPUT, UnsupportedModel, unsupported_operator

CalibrationMethod = Literal["minmax", "entropy", "percentile"]
CALIBRATION_METHODS: tuple[CalibrationMethod, ...] = ("minmax", "entropy", "percentile")
CALIBRATION_SEED = 0
BATCH = 64  # images per calibration batch
# The ops a microcontroller runtime runs in int8; the fallback when quantizing every op ONNX Runtime can
# yields a graph it cannot run (seen with group norm's reshapes).
CORE_OPS = ("Conv", "Gemm", "MatMul", "Add", "Relu", "MaxPool", "AveragePool", "GlobalAveragePool")


@dataclass(frozen=True)
class QuantSettings:
    """How the int8 model is made; recorded with every deployment."""

    calibration_images: int = 1000
    method: CalibrationMethod = "minmax"
    per_channel: bool = True
    format: str = "QDQ"
    weights: str = "int8, symmetric"
    activations: str = "int8, asymmetric"
    split: str = "train"
    selection: str = f"random without replacement, seed {CALIBRATION_SEED}"
    op_types: tuple[str, ...] | None = None  # None: every op ONNX Runtime's quantizer handles
    note: str = ""

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def calibration_indices(train_size: int, count: int) -> Any:
    """``count`` training-image indices, the same for every deployment of a dataset."""
    import numpy as np  # lazy: numpy

    return np.sort(np.random.default_rng(CALIBRATION_SEED).permutation(train_size)[:count])


def _batches(images: Any) -> Iterator[dict[str, Any]]:
    """Equal batches (the entropy and percentile calibrators stack their histograms and refuse a short
    last batch): the largest size up to ``BATCH`` that divides the count."""
    size = next(b for b in range(min(BATCH, len(images)), 0, -1) if len(images) % b == 0)
    for start in range(0, len(images), size):
        yield {INPUT: images[start:start + size]}


def quantize(fp32_path: Path, int8_path: Path, calibration: Any, settings: QuantSettings, name: str) -> None:
    """Write the int8 QDQ model of ``fp32_path`` to ``int8_path``; ``calibration`` is a float32
    ``N x C x H x W`` array of normalized training images."""
    from onnxruntime import quantization as q  # lazy: onnxruntime

    class Reader(q.CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = _batches(calibration)

        def get_next(self) -> dict[str, Any] | None:
            return next(self.batches, None)

    method = {"minmax": q.CalibrationMethod.MinMax, "entropy": q.CalibrationMethod.Entropy,
              "percentile": q.CalibrationMethod.Percentile}[settings.method]
    prepared = int8_path.with_name(int8_path.stem + ".prepared.onnx")
    try:
        # the quantizer prints its progress and logs warnings on the root logger (per-channel axes of biases)
        logging.disable(logging.WARNING)
        with contextlib.redirect_stdout(io.StringIO()):
            try:
                q.quant_pre_process(str(fp32_path), str(prepared))
            except Exception:  # its symbolic shape inference fails on some reshapes: ONNX's own suffices
                q.quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
            q.quantize_static(
                str(prepared), str(int8_path), Reader(), quant_format=q.QuantFormat.QDQ,
                per_channel=settings.per_channel, activation_type=q.QuantType.QInt8,
                weight_type=q.QuantType.QInt8, calibrate_method=method,
                op_types_to_quantize=list(settings.op_types) if settings.op_types else None,
                extra_options={"ActivationSymmetric": False, "WeightSymmetric": True},
            )
    except Exception as exc:  # onnxruntime's quantizer raises many kinds
        raise UnsupportedModel(f"model {name!r} cannot be quantized to int8: {unsupported_operator(exc)}") from None
    finally:
        logging.disable(logging.NOTSET)
        prepared.unlink(missing_ok=True)
