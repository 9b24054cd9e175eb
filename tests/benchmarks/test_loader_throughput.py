"""Throughput of the data loaders alone (no model): one pass over the first ``IMAGES``
training images, shuffled, batch 128, as training reads them.

Cases: the in-memory loader, the ffcv loader and the seeds' per-sample torchvision
DataLoader, each without augmentation, with the batched augmentation (memory, ffcv) and
with the seeds' per-sample one (torchvision). ffcv's conversion and compilation happen
before the timed rounds (construction and the warm-up round).
"""

from __future__ import annotations

import importlib.util

import pytest
import torch

from cnnbench.records import LoaderRequest, resolve

IMAGES = 10_000
BATCH = 128
ROUNDS = 3

CASES = [
    ("mnist", "memory", "none"), ("mnist", "ffcv", "none"), ("mnist", "torchvision", "none"),
    ("mnist", "memory", "rotate10"), ("mnist", "ffcv", "rotate10"), ("mnist", "torchvision", "rotate10-tv"),
    ("cifar10", "memory", "none"), ("cifar10", "ffcv", "none"), ("cifar10", "torchvision", "none"),
    ("cifar10", "memory", "cifar-batch"), ("cifar10", "ffcv", "cifar-batch"),
    ("cifar10", "torchvision", "cifar-album"),
]

pytestmark = pytest.mark.benchmark_suite


@pytest.fixture(scope="session", autouse=True)
def ffcv_cache(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BENCH_CACHE_DIR", str(tmp_path_factory.mktemp("ffcv-cache")))
        yield


@pytest.fixture(scope="session")
def train_split(data_dir, registry):
    cache = {}

    def get(dataset: str):
        if dataset not in cache:
            images, labels = resolve(registry.dataset(dataset).load)(data_dir, "train")
            cache[dataset] = images[:IMAGES], labels[:IMAGES]
        return cache[dataset]

    return get


def one_pass(loader, device: torch.device) -> int:
    seen = 0
    for _, y in loader:
        seen += len(y)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return seen


@pytest.mark.parametrize(("dataset", "loader", "augmentation"), CASES, ids=["-".join(c) for c in CASES])
def test_loader_throughput(benchmark, request, registry, train_split, data_dir, dataset, loader, augmentation):
    if loader == "ffcv" and importlib.util.find_spec("ffcv") is None:
        pytest.skip("pip install 'cnnbench[ffcv]'")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    images, labels = train_split(dataset)
    aug = registry.augmentation(augmentation)
    req = LoaderRequest(
        dataset=registry.dataset(dataset), split="train", images=images, labels=labels, batch_size=BATCH,
        shuffle=True, seed=0, device=device, augmentation=None if augmentation == "none" else aug,
        data_dir=str(data_dir),
    )
    batches = resolve(registry.loader(loader).factory)(req)
    benchmark.group = dataset
    benchmark.extra_info.update(dataset=dataset, loader=loader, augmentation=augmentation, images=IMAGES,
                                batch_size=BATCH, device=str(device), threads=torch.get_num_threads())
    seen = benchmark.pedantic(one_pass, args=(batches, device), rounds=ROUNDS, warmup_rounds=1, iterations=1)
    assert seen == IMAGES
    if benchmark.stats is not None:  # None under --benchmark-disable
        rate = IMAGES / benchmark.stats.stats.median
        benchmark.extra_info["img_per_s"] = round(rate)
        rates = request.config.__dict__.setdefault("cnnbench_loader_rates", {})
        rates[dataset, loader, augmentation] = rate
