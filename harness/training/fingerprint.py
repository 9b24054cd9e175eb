"""Fingerprints that pin what a run was made of: its weights, the data files it read, its code.

``weights_sha256`` hashes the tensors themselves (names, dtypes, shapes and bytes in a fixed
order), so two runs that end in the same weights have the same digest whatever the file
container; ``file_sha256`` hashes a file as stored (the ``.pt`` beside a record, a dataset file).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    from cnnbench.records import DatasetSpec

CHUNK = 1 << 20


def file_sha256(path: Path | str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def weights_sha256(state: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 of a state dict's tensors: each name, dtype, shape and raw bytes, in name order."""
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().to("cpu").contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.view(-1).view(dtype=_as_bytes_dtype()).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def _as_bytes_dtype() -> torch.dtype:
    import torch  # lazy: torch

    return torch.uint8


def dataset_sha256(dataset: DatasetSpec, data_dir: Path) -> dict[str, str]:
    """SHA-256 of each file the dataset's plugin says it reads (``DatasetSpec.files``), by relative path."""
    found: dict[str, str] = {}
    for relative in dataset.files:
        path = Path(data_dir) / relative
        if path.is_file():
            found[relative] = file_sha256(path)
    return found
