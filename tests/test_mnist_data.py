"""The MNIST reader on the real files and on corrupt copies of them."""

from __future__ import annotations

import gzip
import shutil
import struct

import pytest

from cnnbench.errors import BenchError
from cnnbench.plugins import mnist
from cnnbench.plugins.idx import IMAGES_MAGIC, read_idx

TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.fixture(scope="module")
def train(data_dir):
    return mnist.load(data_dir, "train")


def test_real_train_split(train):
    images, labels = train
    assert images.shape == (60_000, 1, 28, 28) and str(images.dtype) == "torch.uint8"
    assert labels.bincount().tolist() == TRAIN_COUNTS
    pixels = images.float() / 255
    assert pixels.mean().item() == pytest.approx(0.1307, abs=5e-5)
    assert pixels.std().item() == pytest.approx(0.3081, abs=5e-5)


def test_real_test_split(data_dir):
    images, labels = mnist.load(data_dir, "test")
    assert images.shape == (10_000, 1, 28, 28)
    assert labels.bincount().tolist() == TEST_COUNTS


@pytest.fixture
def copy_raw(tmp_path, data_dir):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for f in (data_dir / "MNIST" / "raw").iterdir():
        shutil.copy(f, raw / f.name)
    return raw


def test_uncompressed_files_read_too(copy_raw, tmp_path):
    for name in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        gz = copy_raw / f"{name}.gz"
        (copy_raw / name).write_bytes(gzip.decompress(gz.read_bytes()))
        gz.unlink()
    images, labels = mnist.load(tmp_path, "test")
    assert images.shape[0] == labels.shape[0] == 10_000


def test_truncated_gzip_names_the_file(copy_raw, tmp_path):
    path = copy_raw / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:50_000])
    with pytest.raises(BenchError, match="t10k-images-idx3-ubyte.gz"):
        mnist.load(tmp_path, "test")


def test_altered_official_file_fails_md5(copy_raw, tmp_path):
    path = copy_raw / "t10k-labels-idx1-ubyte.gz"
    data = bytearray(gzip.decompress(path.read_bytes()))
    data[100] = (data[100] + 1) % 10
    path.write_bytes(gzip.compress(bytes(data)))
    with pytest.raises(BenchError, match="t10k-labels-idx1-ubyte.gz: md5 does not match"):
        mnist.load(tmp_path, "test")


def _idx(magic: int, dims: tuple[int, ...], payload: bytes) -> bytes:
    return struct.pack(f">i{len(dims)}i", magic, *dims) + payload


def test_idx_checks(tmp_path):
    good = tmp_path / "good"
    good.write_bytes(_idx(IMAGES_MAGIC, (2, 28, 28), bytes(2 * 784)))
    assert read_idx(good, IMAGES_MAGIC, 2).shape == (2, 28, 28)
    cases = {
        "magic number": _idx(2049, (2,), bytes(2)),
        "holds 3 items, expected 2": _idx(IMAGES_MAGIC, (3, 28, 28), bytes(3 * 784)),
        "truncated or padded": _idx(IMAGES_MAGIC, (2, 28, 28), bytes(784)),
        "not an IDX file": b"\x00",
    }
    for message, content in cases.items():
        bad = tmp_path / "bad"
        bad.write_bytes(content)
        with pytest.raises(BenchError, match=message):
            read_idx(bad, IMAGES_MAGIC, 2)


def test_missing_files_say_where_and_how(tmp_path, monkeypatch):
    import torchvision.datasets

    def offline(*args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr(torchvision.datasets, "MNIST", offline)
    with pytest.raises(BenchError) as err:
        mnist.load(tmp_path, "train")
    message = str(err.value)
    assert str(tmp_path / "MNIST" / "raw") in message and "--data-dir" in message and "\n" not in message


def test_data_dir_resolution(monkeypatch, tmp_path):
    from cnnbench.datadir import resolve_data_dir

    monkeypatch.setenv("BENCH_DATA_DIR", str(tmp_path))
    assert str(resolve_data_dir("given")) == "given"
    assert resolve_data_dir(None) == tmp_path
    monkeypatch.delenv("BENCH_DATA_DIR")
    assert str(resolve_data_dir(None)) == "data"
