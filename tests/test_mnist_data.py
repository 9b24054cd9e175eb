"""The MNIST reader on the real files and on corrupt copies of them."""

from __future__ import annotations

import gzip
import shutil
import struct

import pytest

from cnnbench.errors import BenchError, DataError
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


IMAGES, LABELS = "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"


@pytest.fixture(scope="module")
def real_idx(data_dir):
    """The uncompressed bytes of the real test-split IDX files."""
    raw = data_dir / "MNIST" / "raw"
    return {stem: gzip.decompress((raw / f"{stem}.gz").read_bytes()) for stem in (IMAGES, LABELS)}


def header(magic: int, *dims: int) -> bytes:
    return struct.pack(f">I{len(dims)}I", magic, *dims)


def gz(blob: bytes) -> bytes:
    return gzip.compress(blob, mtime=0)  # the same bytes every time


def damage_deflate(blob: bytes) -> bytes:
    """``blob`` (a gzip file) with the first 16 bytes of its deflate stream inverted."""
    return blob[:10] + bytes(b ^ 0xFF for b in blob[10:26]) + blob[26:]


# (id, file written, its content from the real bytes, fragment of the message); names without
# ".gz" are not md5-checked, and the ".gz" cases run with the md5 table emptied (but "md5-*")
BAD_IDX = [
    ("magic-not-idx", IMAGES, lambda r: b"PK\x03\x04" + r[IMAGES][4:],
     "magic number 0x504b0304, expected 0x00000803; not an unsigned-byte IDX file"),
    ("magic-float-type", IMAGES, lambda r: b"\x00\x00\x0d\x03" + r[IMAGES][4:], "magic number 0x00000d03, expected"),
    ("labels-file-as-images", IMAGES, lambda r: r[LABELS], "magic number 0x00000801 gives 1 dimension, expected 3"),
    ("images-file-as-labels", LABELS, lambda r: r[IMAGES], "magic number 0x00000803 gives 3 dimensions, expected 1"),
    ("images-2-dims", IMAGES, lambda r: header(0x802, 10_000, 784) + r[IMAGES][16:], "gives 2 dimensions, expected 3"),
    ("image-count", IMAGES, lambda r: header(0x803, 9_999, 28, 28) + r[IMAGES][16:16 + 9_999 * 784],
     "holds 9999 items, expected 10000"),
    ("label-count", LABELS, lambda r: header(0x801, 10_001) + r[LABELS][8:] + b"\x00",
     "holds 10001 items, expected 10000"),
    ("images-truncated", IMAGES, lambda r: r[IMAGES][:-1],
     "7839999 data bytes, header says 10000 x 28 x 28 = 7840000; the file is truncated or padded"),
    ("images-padded", IMAGES, lambda r: r[IMAGES] + b"\x00", "7840001 data bytes, header says 10000 x 28 x 28"),
    ("labels-truncated", LABELS, lambda r: r[LABELS][:5_000], "4992 data bytes, header says 10000 = 10000"),
    ("dims-overflow-int64", IMAGES, lambda r: header(0x803, 10_000, 2**31, 2**31) + r[IMAGES][16:],
     "header says 10000 x 2147483648 x 2147483648 = 46116860184273879040000; the file is truncated or padded"),
    ("header-cut-short", IMAGES, lambda r: r[IMAGES][:10], "header cut short (10 bytes, 3 dimensions need 16)"),
    ("empty", LABELS, lambda r: b"", "only 0 bytes; not an IDX file"),
    ("images-32x32", IMAGES, lambda r: header(0x803, 10_000, 32, 32) + bytes(10_000 * 1024),
     "images are 32 x 32, expected 28 x 28"),
    ("label-10", LABELS, lambda r: r[LABELS][:8] + b"\x0a" + r[LABELS][9:], "label 10 out of range 0-9"),
    ("gz-truncated", f"{IMAGES}.gz", lambda r: gz(r[IMAGES])[:50_000],
     "cannot be gunzipped (EOFError: Compressed file ended before the end-of-stream marker was reached)"),
    ("gz-not-gzip", f"{LABELS}.gz", lambda r: r[LABELS], "cannot be gunzipped (BadGzipFile: Not a gzipped file"),
    ("gz-damaged-stream", f"{IMAGES}.gz", lambda r: damage_deflate(gz(r[IMAGES])),
     "cannot be gunzipped (zlib.error: Error -3 while decompressing data"),
    ("gz-bad-crc", f"{LABELS}.gz", lambda r: gz(r[LABELS])[:-8] + bytes(8),
     "cannot be gunzipped (BadGzipFile: CRC check failed"),
    ("gz-trailing-garbage", f"{LABELS}.gz", lambda r: gz(r[LABELS]) + b"garbage",
     "cannot be gunzipped (BadGzipFile: Not a gzipped file"),
    ("gz-of-truncated-idx", f"{IMAGES}.gz", lambda r: gz(r[IMAGES][:-784]),
     "7839216 data bytes, header says 10000 x 28 x 28 = 7840000"),
    ("md5-truncated-gz", f"{IMAGES}.gz", lambda r: gz(r[IMAGES])[:50_000],
     "md5 does not match the official file; it is corrupt or altered"),
    ("md5-altered-label", f"{LABELS}.gz", lambda r: gz(r[LABELS][:100] + b"\x03" + r[LABELS][101:]),
     "md5 does not match the official file; it is corrupt or altered"),
]


@pytest.mark.parametrize(("name", "make", "fragment"), [case[1:] for case in BAD_IDX],
                         ids=[case[0] for case in BAD_IDX])
def test_bad_idx_file_is_a_one_line_error_naming_it(tmp_path, real_idx, monkeypatch, name, make, fragment):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for stem, content in real_idx.items():  # good uncompressed companions (not md5-checked)
        (raw / stem).write_bytes(content)
    if name.endswith(".gz"):
        (raw / name.removesuffix(".gz")).unlink()
    (raw / name).write_bytes(make(real_idx))
    if not fragment.startswith("md5"):
        monkeypatch.setattr(mnist, "OFFICIAL_MD5", {})
    with pytest.raises(DataError) as err:
        mnist.load(tmp_path, "test")
    message = str(err.value)
    assert message.startswith(f"{raw / name}: ") and fragment in message, message
    assert "\n" not in message


def test_idx_reader_direct(tmp_path):
    good = tmp_path / "good"
    good.write_bytes(header(IMAGES_MAGIC, 2, 28, 28) + bytes(2 * 784))
    assert read_idx(good, IMAGES_MAGIC, 2).shape == (2, 28, 28)
    assert read_idx(good, IMAGES_MAGIC).shape == (2, 28, 28)
    with pytest.raises(DataError, match=r"not a regular file \(a FIFO, a device or a folder\)"):
        read_idx(tmp_path, IMAGES_MAGIC)


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
