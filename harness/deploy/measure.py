"""What a deployed model measures: accuracy through ONNX Runtime, agreement with torch, latency,
throughput, the bytes a microcontroller runtime would store, and peak activation memory.

Latency follows MLPerf Tiny's habit: batch 1, one thread, the median of 5 windows after warm-up.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cnnbench.deploy.export import INPUT, UnsupportedModel, unsupported_operator

EVAL_BATCH = 500
WINDOWS = 5
WINDOW_SECONDS = 0.25  # each latency window runs at least this long
WARMUP_SECONDS = 0.25
THROUGHPUT_BATCH = 1024


def session(path: Path, threads: int, name: str) -> Any:
    """An ONNX Runtime CPU session with ``threads`` intra-op threads (all graph optimizations on:
    QDQ pairs become integer kernels there)."""
    import onnxruntime as ort  # lazy: onnxruntime

    ort.set_default_logger_severity(4)  # errors come back as exceptions; not also printed on stderr
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # an operator ONNX Runtime has no kernel for
        raise UnsupportedModel(f"model {name!r}: ONNX Runtime cannot run {path.name}: "
                               f"unsupported operator {unsupported_operator(exc)}") from None


def outputs(sess: Any, images: Any, batch: int = EVAL_BATCH) -> Any:
    """The model's outputs for every image (float32 ``N x classes``)."""
    import numpy as np  # lazy: numpy

    return np.concatenate([sess.run(None, {INPUT: images[i:i + batch]})[0] for i in range(0, len(images), batch)])


def torch_outputs(model: Any, images: Any, batch: int = EVAL_BATCH) -> Any:
    import numpy as np  # lazy: numpy
    import torch  # lazy: torch

    with torch.no_grad():
        return np.concatenate([model(torch.from_numpy(images[i:i + batch])).numpy()
                               for i in range(0, len(images), batch)])


def accuracy(logits: Any, labels: Any) -> float:
    return float((logits.argmax(1) == labels).mean())


@dataclass(frozen=True)
class Agreement:
    max_abs_diff: float  # of the log-probabilities, over every test image and class
    argmax_agreement: float  # fraction of test images with the same predicted class

    def as_json(self) -> dict[str, float]:
        return {"max_abs_diff": self.max_abs_diff, "argmax_agreement": self.argmax_agreement}


def agreement(reference: Any, other: Any) -> Agreement:
    import numpy as np  # lazy: numpy

    return Agreement(float(np.abs(reference - other).max()), float((reference.argmax(1) == other.argmax(1)).mean()))


def _timed(run: Any, calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        run()
    return time.perf_counter() - start


def latency_ms(sess: Any, image: Any) -> dict[str, Any]:
    """Batch-1 latency: warm-up, then the median over ``WINDOWS`` windows of the mean time per call."""
    feed = {INPUT: image[None]}

    def run() -> None:
        sess.run(None, feed)

    calls, spent = 1, _timed(run, 1)
    while spent < WARMUP_SECONDS:  # warm-up doubles as sizing a window
        calls *= 2
        spent = _timed(run, calls)
    per_window = max(1, math.ceil(calls * WINDOW_SECONDS / max(spent, 1e-9)))
    windows = [_timed(run, per_window) / per_window * 1e3 for _ in range(WINDOWS)]
    return {"median_ms": statistics.median(windows), "windows_ms": windows, "calls_per_window": per_window}


def throughput(sess: Any, images: Any, batch: int = THROUGHPUT_BATCH) -> dict[str, Any]:
    """Images per second at a large batch: the median of ``WINDOWS`` calls after one warm-up call."""
    import numpy as np  # lazy: numpy

    x = np.ascontiguousarray(np.resize(images, (batch, *images.shape[1:])))
    sess.run(None, {INPUT: x})
    seconds = [_timed(lambda: sess.run(None, {INPUT: x}), 1) for _ in range(WINDOWS)]
    return {"images_per_s": batch / statistics.median(seconds), "batch": batch}


# --- bytes ---------------------------------------------------------------------------------------------

ONE_BYTE = {"INT8", "UINT8"}


def model_bytes(path: Path) -> dict[str, int]:
    """What a microcontroller runtime stores of the int8 model: int8 weights (and zero points) at one byte,
    int32 biases and float32 scales at four, as TFLite Micro holds them. Not counted: the ONNX format's
    names and structure, int64 shape constants (graph plumbing), and the scale and zero point QDQ stores
    for each int32 bias, which a runtime derives (input scale x weight scale, zero point 0)."""
    import onnx  # lazy: onnx
    from onnx import numpy_helper  # lazy: onnx

    graph = onnx.load(str(path)).graph
    inits = {i.name: i for i in graph.initializer}
    derived = set()
    for node in graph.node:
        source = inits.get(node.input[0]) if node.op_type == "DequantizeLinear" and node.input else None
        if source is not None and source.data_type == onnx.TensorProto.INT32:
            derived.update(node.input[1:])
    kinds = {"weights_int8": 0, "biases_int32": 0, "scales_float": 0, "other": 0}
    skipped = 0
    for name, init in inits.items():
        dtype = onnx.TensorProto.DataType.Name(init.data_type)
        nbytes = numpy_helper.to_array(init).nbytes
        if dtype == "INT64" or name in derived:
            skipped += nbytes
            continue
        kinds["weights_int8" if dtype in ONE_BYTE else "biases_int32" if dtype == "INT32"
              else "scales_float" if dtype == "FLOAT" else "other"] += nbytes
    return {"total": sum(kinds.values()), **kinds, "not_counted": skipped}


# One input, same size out: a runtime computes these in place or fuses them into the op before
# (TFLite fuses ReLU into its convolution; a reshape is a view).
IN_PLACE = {"Relu", "Clip", "LeakyRelu", "Sigmoid", "Tanh", "HardSigmoid", "HardSwish", "Identity", "Reshape",
            "Flatten", "Squeeze", "Unsqueeze", "Dropout"}


def peak_activation_bytes(path: Path, bytes_per_element: int = 1) -> dict[str, Any]:
    """The largest memory of live activations at batch 1 when the graph runs in its stored order:
    a tensor lives from the node that makes it to the last node that reads it, so the peak counts a
    node's inputs and outputs plus anything kept for later (a residual's shortcut); ``IN_PLACE`` ops
    reuse their input's memory. ``bytes_per_element``: 1 as an int8 runtime holds activations, 4 for fp32.
    A scheduler free to reorder the graph could do better; this is the plain order's figure."""
    import onnx  # lazy: onnx

    model = onnx.shape_inference.infer_shapes(onnx.load(str(path)))
    graph = model.graph
    constants = {i.name for i in graph.initializer}
    sizes: dict[str, int] = {}
    for value in [*graph.input, *graph.value_info, *graph.output]:
        dims = value.type.tensor_type.shape.dim
        sizes[value.name] = math.prod(d.dim_value if d.HasField("dim_value") else 1 for d in dims) * bytes_per_element
    nodes = list(graph.node)
    last_use: dict[str, int] = {}
    for i, node in enumerate(nodes):
        for name in node.input:
            last_use[name] = i
    for out in graph.output:
        last_use[out.name] = len(nodes)
    live = {i.name for i in graph.input if i.name not in constants}
    peak, where = sum(sizes.get(n, 0) for n in live), "input"
    for i, node in enumerate(nodes):
        made = [n for n in node.output if n]
        inputs = [n for n in node.input if n and n not in constants]
        if node.op_type in IN_PLACE and len(inputs) == 1 and last_use.get(inputs[0]) == i:
            live = (live - {inputs[0]}) | set(made)  # written over its input (an activation fused into its conv)
            continue
        current = sum(sizes.get(n, 0) for n in live | set(made))
        if current > peak:
            peak, where = current, node.op_type
        live = {n for n in live | set(made) if last_use.get(n, -1) > i}
    return {"bytes": peak, "at": where}
