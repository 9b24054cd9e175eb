"""Back-to-back training throughput: the seeds' pipeline against cnnbench's in-memory path.

The seeds' pipeline is built exactly as the documents do it: ``torchvision.datasets.MNIST``
with ``RandomRotation(10)``, ``ToTensor`` and ``Normalize`` per sample, batched by a
``DataLoader``. cnnbench's path is the ``memory`` loader with the batched ``rotate10``.
Both train the same model (``mnist_gap``) with the same optimizer for the same images.

    python tests/seed_pipeline_compare.py --images 60000 --out results/benchmarks/pipeline_mnist.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from torch.nn import functional as F


def train_images(model, batches, optimizer, limit: int) -> tuple[int, float]:
    """Train on up to ``limit`` images; returns (images, seconds) including data loading."""
    model.train()
    seen, t0 = 0, time.perf_counter()
    for x, y in batches:
        loss = F.nll_loss(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        seen += len(y)
        if seen >= limit:
            break
    return seen, time.perf_counter() - t0


def torchvision_mnist_root(data_dir: str) -> str:
    """torchvision's MNIST wants the unpacked files; unpack the official archives into a
    scratch folder (its 'download' finds them there, checks their md5 and only extracts)."""
    import shutil
    import tempfile

    from torchvision import datasets

    root = Path(tempfile.gettempdir()) / "cnnbench-torchvision-mnist"
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for archive in (Path(data_dir) / "MNIST" / "raw").glob("*.gz"):
        if not (raw / archive.name).exists():
            shutil.copy(archive, raw / archive.name)
    datasets.MNIST(str(root), train=True, download=True)
    return str(root)


def seeds_pipeline(data_dir: str, batch_size: int, workers: int):
    from torchvision import datasets, transforms

    transform = transforms.Compose(
        [transforms.RandomRotation(10), transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))]
    )
    dataset = datasets.MNIST(torchvision_mnist_root(data_dir), train=True, download=False, transform=transform)
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=workers)


def cnnbench_pipeline(data_dir: str, batch_size: int):
    from cnnbench.records import LoaderRequest, resolve
    from cnnbench.registry import get_registry

    registry = get_registry()
    dataset = registry.dataset("mnist")
    images, labels = resolve(dataset.load)(data_dir, "train")
    request = LoaderRequest(
        dataset=dataset,
        split="train",
        images=images,
        labels=labels,
        batch_size=batch_size,
        shuffle=True,
        seed=0,
        device=torch.device("cpu"),
        augmentation=registry.augmentation("rotate10"),
    )
    return resolve(registry.loader("memory").factory)(request)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=str(Path(__file__).resolve().parents[2] / "shared" / "datasets"))
    parser.add_argument("--images", type=int, default=60_000, help="training images per pipeline")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2], help="DataLoader workers to try")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    from cnnbench.registry import create_model

    results = {}
    pipelines = [
        (f"seeds (torchvision, {w} workers)", lambda w=w: seeds_pipeline(args.data_dir, args.batch_size, w))
        for w in args.workers
    ]
    pipelines.append(("cnnbench memory + batched rotate10", lambda: cnnbench_pipeline(args.data_dir, args.batch_size)))
    for name, make in pipelines:
        torch.manual_seed(0)
        model = create_model("mnist_gap")
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        seen, seconds = train_images(model, make(), optimizer, args.images)
        results[name] = {"images": seen, "seconds": round(seconds, 2), "images_per_s": round(seen / seconds, 1)}
        print(f"{name:<40} {seen:>6} images  {seconds:6.1f} s  {seen / seconds:8,.0f} img/s", flush=True)
    fastest_seed = max(v["images_per_s"] for k, v in results.items() if k.startswith("seeds"))
    ours = results["cnnbench memory + batched rotate10"]["images_per_s"]
    print(f"ratio cnnbench / best seeds pipeline: {ours / fastest_seed:.2f}x")
    if args.out:
        from cnnbench.training import provenance

        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(
            json.dumps(
                {
                    "benchmark": "mnist_gap training throughput, seeds' pipeline vs cnnbench memory loader",
                    "results": results,
                    "ratio": round(ours / fastest_seed, 2),
                    "threads": torch.get_num_threads(),
                    "machine": provenance.machine(),
                    "versions": provenance.library_versions(),
                    "git": provenance.git_commit(),
                },
                indent=1,
            )
            + "\n"
        )


if __name__ == "__main__":
    main()
