"""The CIFAR-10 reader against the known facts of the official files, and against crafted,
truncated and missing files."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from cnnbench.datadir import md5sum
from cnnbench.errors import BenchError
from cnnbench.plugins import cifar10
from cnnbench.plugins.cifar_unpickle import UnsafePickleError, restricted_loads


@pytest.fixture(scope="module")
def cifar_dir(data_dir: Path) -> Path:
    folder = data_dir / cifar10.FOLDER
    if not folder.is_dir():
        pytest.fail(f"CIFAR-10 not found at {folder}")
    return data_dir


@pytest.fixture(scope="module")
def train(cifar_dir: Path):
    return cifar10.load(cifar_dir, "train")


@pytest.fixture(scope="module")
def test_split(cifar_dir: Path):
    return cifar10.load(cifar_dir, "test")


class Payload:
    """Unpickling this would run a shell command that creates ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def fake_folder(tmp_path: Path, cifar_dir: Path, replace: dict[str, bytes]) -> Path:
    """A data dir whose batches link to the real files except those in ``replace``."""
    folder = tmp_path / cifar10.FOLDER
    folder.mkdir()
    for name in cifar10.OFFICIAL_MD5:
        if name in replace:
            (folder / name).write_bytes(replace[name])
        else:
            (folder / name).symlink_to(cifar_dir / cifar10.FOLDER / name)
    return tmp_path


def test_shapes_and_counts(train, test_split) -> None:
    for (images, labels), n, per_class in ((train, 50_000, 5_000), (test_split, 10_000, 1_000)):
        assert images.shape == (n, 3, 32, 32) and str(images.dtype) == "torch.uint8"
        assert labels.shape == (n,) and str(labels.dtype) == "torch.int64"
        assert labels.bincount(minlength=10).tolist() == [per_class] * 10


def test_channel_mean_and_std(train) -> None:
    images = train[0].numpy()
    for channel, (mean, std) in enumerate(zip(cifar10.MEAN, cifar10.STD, strict=True)):
        hist = np.bincount(images[:, channel].ravel(), minlength=256).astype(np.float64)
        values = np.arange(256) / 255.0
        m = (hist * values).sum() / hist.sum()
        s = np.sqrt((hist * (values - m) ** 2).sum() / hist.sum())
        assert m == pytest.approx(mean, abs=1e-4)
        assert s == pytest.approx(std, abs=1e-4)


def test_same_pixels_and_labels_as_torchvision(cifar_dir: Path, test_split) -> None:
    """Channel order and layout agree with torchvision's own reader (H x W x C, RGB)."""
    from torchvision.datasets import CIFAR10

    reference = CIFAR10(root=str(cifar_dir), train=False, download=False)
    images, labels = test_split
    assert np.array_equal(images.permute(0, 2, 3, 1).numpy(), reference.data)
    assert labels.tolist() == reference.targets


def test_class_names_come_from_batches_meta(cifar_dir: Path, registry) -> None:
    assert cifar10.read_class_names(cifar_dir / cifar10.FOLDER) == cifar10.CLASS_NAMES
    spec = registry.dataset("cifar10")
    assert spec.class_names == cifar10.CLASS_NAMES and spec.image_shape == (3, 32, 32)
    assert (spec.train_size, spec.test_size, spec.num_classes) == (50_000, 10_000, 10)


def test_official_md5s(cifar_dir: Path) -> None:
    for name, expected in cifar10.OFFICIAL_MD5.items():
        assert md5sum(cifar_dir / cifar10.FOLDER / name) == expected


def test_data_dir_from_environment_and_folder_itself(cifar_dir: Path, monkeypatch) -> None:
    monkeypatch.setenv("BENCH_DATA_DIR", str(cifar_dir))
    assert cifar10.load(None, "test")[1].shape == (10_000,)
    assert cifar10.load(cifar_dir / cifar10.FOLDER, "test")[1].shape == (10_000,)


def test_restricted_unpickler_refuses_code(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    # protocol 3+: Python 3's protocol 2 writes bytes through _codecs.encode, itself refused
    for protocol in (3, 4):
        with pytest.raises(UnsafePickleError, match="posix.system|os.system|nt.system"):
            restricted_loads(pickle.dumps({b"data": Payload(marker)}, protocol=protocol))
    assert not marker.exists()
    with pytest.raises(UnsafePickleError, match="dtype"):
        restricted_loads(pickle.dumps(np.zeros(3, dtype=object), protocol=4))
    # a plain uint8 array, pickled as numpy does, is admitted
    arr = np.arange(12, dtype=np.uint8).reshape(3, 4)
    assert np.array_equal(restricted_loads(pickle.dumps(arr, protocol=4)), arr)


def test_crafted_batch_is_refused(tmp_path: Path, cifar_dir: Path, monkeypatch) -> None:
    marker = tmp_path / "pwned"
    crafted = pickle.dumps({b"data": Payload(marker), b"labels": [0]}, protocol=4)
    root = fake_folder(tmp_path, cifar_dir, {"test_batch": crafted})
    with pytest.raises(BenchError, match="test_batch: md5"):
        cifar10.load(root, "test")
    # even with a matching checksum, the unpickler stops it
    monkeypatch.setitem(cifar10.OFFICIAL_MD5, "test_batch", md5sum(root / cifar10.FOLDER / "test_batch"))
    with pytest.raises(BenchError, match=r"test_batch: cannot be read.*not allowed"):
        cifar10.load(root, "test")
    assert not marker.exists()


def test_truncated_batch_names_the_file(tmp_path: Path, cifar_dir: Path, monkeypatch) -> None:
    head = (cifar_dir / cifar10.FOLDER / "test_batch").read_bytes()[:100_000]
    root = fake_folder(tmp_path, cifar_dir, {"test_batch": head})
    with pytest.raises(BenchError, match="test_batch: md5 .*corrupt, truncated"):
        cifar10.load(root, "test")
    monkeypatch.setitem(cifar10.OFFICIAL_MD5, "test_batch", md5sum(root / cifar10.FOLDER / "test_batch"))
    with pytest.raises(BenchError, match="test_batch: cannot be read"):
        cifar10.load(root, "test")


def test_wrong_shape_names_the_file(tmp_path: Path, cifar_dir: Path, monkeypatch) -> None:
    small = {b"data": np.zeros((10, 3072), np.uint8), b"labels": [0] * 10}
    root = fake_folder(tmp_path, cifar_dir, {"test_batch": pickle.dumps(small, protocol=4)})
    monkeypatch.setitem(cifar10.OFFICIAL_MD5, "test_batch", md5sum(root / cifar10.FOLDER / "test_batch"))
    with pytest.raises(BenchError, match=r"test_batch: 'data' is ndarray \(10, 3072\)"):
        cifar10.load(root, "test")


def test_missing_file_is_named(tmp_path: Path, cifar_dir: Path) -> None:
    root = fake_folder(tmp_path, cifar_dir, {})
    (root / cifar10.FOLDER / "data_batch_3").unlink()
    with pytest.raises(BenchError, match="missing data_batch_3"):
        cifar10.load(root, "train")


def test_missing_dataset_lists_paths_and_how_to_fix(tmp_path: Path, monkeypatch) -> None:
    import torchvision.datasets

    def offline(*args, **kwargs):
        raise RuntimeError("no network")

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", offline)
    with pytest.raises(BenchError) as err:
        cifar10.load(tmp_path, "train")
    message = str(err.value)
    assert str(tmp_path / cifar10.FOLDER) in message
    assert "download failed" in message and "--data-dir" in message and "BENCH_DATA_DIR" in message


def test_unknown_split(cifar_dir: Path) -> None:
    with pytest.raises(BenchError, match="valid splits: train, test"):
        cifar10.load(cifar_dir, "val")


def test_plugin_module_does_not_import_torch() -> None:
    import subprocess
    import sys

    code = (
        "import sys, cnnbench.plugins.cifar10, cnnbench.plugins.cifar_models, cnnbench.plugins.augment_cifar; "
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
