"""Batch-1 latency of deployed models on one CPU thread: torch eager (fp32) against ONNX Runtime fp32 and
int8, for the committed deployments of the models named in ``MODELS`` (their first deployed seed).

Not part of the default run (marked ``benchmark_suite``)::

    pytest tests/benchmarks/test_deploy_latency.py -m benchmark_suite --benchmark-enable \
        --benchmark-json results/benchmarks/deploy_latency.json

``bench deploy`` measures the same figures for every run (median of 5 windows); this benchmark repeats
them under pytest-benchmark's statistics and adds torch's own batch-1 latency, which bench deploy does
not measure, as the baseline of the ratios.
"""

from __future__ import annotations

import json

import pytest
from support import ROOT

pytest.importorskip("onnxruntime", reason="needs the deploy extra")
pytestmark = pytest.mark.benchmark_suite

RESULTS = ROOT / "results"
MODELS = ("mnist_fast", "mnist_gap", "resnet8", "cifar_fast")


def first_deployment(model: str) -> dict | None:
    for path in sorted(RESULTS.glob(f"*-{model}-s*.deploy.json")):
        return json.loads(path.read_text())
    return None


CASES = [(m, kind) for m in MODELS for kind in ("torch", "fp32", "int8")]


@pytest.mark.parametrize(("model", "kind"), CASES, ids=[f"{m}-{k}" for m, k in CASES])
def test_batch1_latency(benchmark, registry, model: str, kind: str) -> None:
    import numpy as np
    import onnxruntime as ort
    import torch

    deployment = first_deployment(model)
    if deployment is None:
        pytest.skip(f"no committed deployment of {model} (bench deploy {model})")
    shape = registry.dataset(registry.model(model).dataset).image_shape
    x = np.random.default_rng(0).standard_normal((1, *shape)).astype(np.float32)
    benchmark.extra_info.update(model=model, kind=kind, threads=1, run_id=deployment["run_id"])
    if kind == "torch":
        torch.set_num_threads(1)
        net = registry.create_model(model).eval()
        net.load_state_dict(torch.load(RESULTS / deployment["weights"], weights_only=True))
        tensor = torch.from_numpy(x)
        with torch.no_grad():
            benchmark(lambda: net(tensor))
        return
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = 1, 1
    folder = RESULTS / deployment["files_dir"]
    session = ort.InferenceSession(str(folder / f"{kind}.onnx"), options, providers=["CPUExecutionProvider"])
    benchmark(lambda: session.run(None, {"input": x}))
