"""Run records for the report's tests: a small varied field, and a thousand for timing.

Plain dicts shaped like cnnbench.train's records, written as ``<run_id>.json``.
"""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path
from typing import Any

_ids = itertools.count()
CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def make_record(*, model: str = "mnist_gap", dataset: str = "mnist", seed: int = 0, params: int = 7_852,
                accs: list[float] | None = None, lr: float = 0.1, seconds: float = 20.0, device: str = "cpu",
                normalizer: str = "batch", classes: list[str] | None = None, **extra: Any) -> dict[str, Any]:
    """One record; ``classes`` names the classes (0..9 by default)."""
    accs = accs or [0.97, 0.985, 0.99, 0.995]
    classes = classes or [str(i) for i in range(10)]
    run_id = f"20260301T{next(_ids):06d}Z-{re.sub(r'[^A-Za-z0-9_]', '', model)}-s{seed}-beef"
    epochs = [{"epoch": i + 1, "train_loss": 0.4 / (i + 1), "train_acc": a - 0.004, "test_loss": 0.3 / (i + 1.5),
               "test_acc": a, "lr": lr, "seconds": seconds, "images_per_s": 3000.0} for i, a in enumerate(accs)]
    best = max(epochs, key=lambda e: e["test_acc"])
    n = len(classes)
    confusion = [[980 if i == j else (12 if (i + 1) % n == j else 0) for j in range(n)] for i in range(n)]
    record = {
        "schema_version": 2, "run_id": run_id, "model": model, "dataset": dataset, "normalizer": normalizer,
        "augmentation": "none", "loader": "memory", "params": params,
        "recipe": {"epochs": len(accs), "batch_size": 128, "optimizer": "sgd", "lr": lr, "momentum": 0.9,
                   "weight_decay": 0.0, "scheduler": "none", "step_size": 1, "gamma": 0.1,
                   "augmentation": "none", "dropout": None},
        "seed": seed, "device": device, "precision": "fp32", "created": run_id[:16], "command": "bench run",
        "source": "test", "epochs": epochs, "epochs_run": len(epochs), "final_test_acc": accs[-1],
        "best_test_acc": best["test_acc"], "best_epoch": best["epoch"],
        "per_class_acc": {c: 980 / 992 for c in classes}, "confusion": confusion,
        "train_images": 60_000 if dataset == "mnist" else 50_000, "test_images": 10_000,
        "total_seconds": seconds * len(accs), "images_per_s": 3000.0, "stopped_by": None, "threads": 2,
        "machine": {"hostname": "h", "cpu": "AMD EPYC 7B13", "cpu_count": 2,
                    **({"gpu": "NVIDIA H100 80GB HBM3"} if device.startswith("cuda") else {})},
        "versions": {"python": "3.11.7", "torch": "2.14.1"}, "git": {"commit": "abc", "dirty": False},
        "weights": None, "plugins": {}, "status": "complete", "resumed_at": [], "launch": {},
    }
    record.update(extra)
    return record


def write(results: Path, record: dict[str, Any]) -> dict[str, Any]:
    results.mkdir(parents=True, exist_ok=True)
    (results / f"{record['run_id']}.json").write_text(json.dumps(record, indent=1))
    return record


def small_field(results: Path) -> list[dict[str, Any]]:
    """Two datasets, passing and failing configurations, several seeds, CPU and GPU, one hostile name."""
    written = []
    for seed, final in enumerate([0.9945, 0.9941, 0.9950]):
        written.append(write(results, make_record(seed=seed, accs=[0.97, 0.985, 0.992, final])))
    for seed in range(2):
        written.append(write(results, make_record(model="mnist_2block", params=19_728, seed=seed, device="cuda:0",
                                                  seconds=2.0, accs=[0.98, 0.99, 0.993 + 0.001 * seed])))
    written.append(write(results, make_record(model="<script>alert(1)</script>", params=5_000,
                                              accs=[0.95, 0.97, 0.98],
                                              classes=[f"<b>c{i}</b>" for i in range(10)])))
    for seed in range(2):
        written.append(write(results, make_record(model="cifar_3block", dataset="cifar10", params=46_202, seed=seed,
                                                  accs=[0.6, 0.75, 0.82 + 0.01 * seed], classes=CIFAR_CLASSES)))
    written.append(write(results, make_record(model="cifar_c13", dataset="cifar10", params=104_656,
                                              accs=[0.7, 0.8, 0.86], classes=CIFAR_CLASSES)))
    return written


def thousand(results: Path, n: int = 1000) -> None:
    """``n`` records as a large sweep leaves them: 200 configurations (models x learning rates x
    normalizers, on two datasets) of 5 seeds, 15 epochs each."""
    models = [("mnist_gap", "mnist", 7_852), ("mnist_step1", "mnist", 10_970), ("mnist_step3", "mnist", 8_008),
              ("mnist_2block", "mnist", 19_728), ("cifar_3block", "cifar10", 46_202)]
    for i in range(n):
        config, seed = divmod(i, 5)
        model, dataset, params = models[config % len(models)]
        lr = 0.01 * (1 + (config // len(models)) % 20)
        normalizer = ("batch", "group")[config // (len(models) * 20) % 2]
        top = 0.99 if dataset == "mnist" else 0.8
        accs = [top - 0.03 / (e + 1) + 0.0002 * ((i * 7 + e) % 30) for e in range(15)]
        write(results, make_record(model=model, dataset=dataset, params=params, seed=seed, lr=lr, accs=accs,
                                   normalizer=normalizer,
                                   classes=CIFAR_CLASSES if dataset == "cifar10" else None))
