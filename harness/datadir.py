"""Where datasets are read from: ``--data-dir``, else ``$BENCH_DATA_DIR``, else ``./data``."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def resolve_data_dir(data_dir: str | os.PathLike[str] | None = None) -> Path:
    """The folder holding ``MNIST/raw`` and ``cifar-10-batches-py``."""
    if data_dir:
        return Path(data_dir)
    if os.environ.get("BENCH_DATA_DIR"):
        return Path(os.environ["BENCH_DATA_DIR"])
    return Path("data")


def md5sum(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
