"""Run records for the report's tests: a small varied field, and a thousand for timing.

Made by ``support.make_record`` and written as ``bench run`` writes them (``<run_id>.json``).
"""

from __future__ import annotations

from pathlib import Path

from support import DIGITS, H100, make_record, write_records

from cnnbench.runrecord import RunRecord

CIFAR_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
HOSTILE = "<script>alert(1)</script>"


def small_field(results: Path) -> list[RunRecord]:
    """Two datasets, passing and failing configurations, several seeds, CPU and GPU, one hostile name."""
    return write_records(
        results,
        *(make_record(seed=seed, accs=[0.97, 0.985, 0.992, final])
          for seed, final in enumerate([0.9945, 0.9941, 0.9950])),
        *(make_record(model="mnist_2block", params=19_728, seed=seed, device="cuda:0", machine=H100, seconds=2.0,
                      accs=[0.98, 0.99, 0.993 + 0.001 * seed]) for seed in range(2)),
        make_record(model=HOSTILE, params=5_000, accs=[0.95, 0.97, 0.98],
                    classes=[f"<b>c{i}</b>" for i in range(10)]),
        *(make_record(model="cifar_3block", dataset="cifar10", params=46_202, seed=seed,
                      accs=[0.6, 0.75, 0.82 + 0.01 * seed], classes=CIFAR_CLASSES) for seed in range(2)),
        make_record(model="cifar_c13", dataset="cifar10", params=104_656, accs=[0.7, 0.8, 0.86],
                    classes=CIFAR_CLASSES),
    )


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
        write_records(results, make_record(model=model, dataset=dataset, params=params, seed=seed, lr=lr, accs=accs,
                                           normalizer=normalizer,
                                           classes=CIFAR_CLASSES if dataset == "cifar10" else DIGITS))
