"""The CIFAR-10 reader against the known facts of the official files, and against crafted,
truncated and missing files."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from cnnbench.datadir import md5sum
from cnnbench.errors import DataError, UsageError
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
    with pytest.raises(DataError, match="test_batch: md5"):
        cifar10.load(root, "test")
    # even with a matching checksum, the unpickler stops it
    monkeypatch.setitem(cifar10.OFFICIAL_MD5, "test_batch", md5sum(root / cifar10.FOLDER / "test_batch"))
    with pytest.raises(DataError, match=r"test_batch: cannot be read.*not allowed"):
        cifar10.load(root, "test")
    assert not marker.exists()


def test_truncated_batch_names_the_file(tmp_path: Path, cifar_dir: Path, monkeypatch) -> None:
    head = (cifar_dir / cifar10.FOLDER / "test_batch").read_bytes()[:100_000]
    root = fake_folder(tmp_path, cifar_dir, {"test_batch": head})
    with pytest.raises(DataError, match="test_batch: md5 .*corrupt, truncated"):
        cifar10.load(root, "test")
    monkeypatch.setitem(cifar10.OFFICIAL_MD5, "test_batch", md5sum(root / cifar10.FOLDER / "test_batch"))
    with pytest.raises(DataError, match="test_batch: cannot be read"):
        cifar10.load(root, "test")


# --- crafted batches: each a one-line DataError naming the file ---------------------------


class Reduced:
    """Pickles as ``callable(*args)`` followed by a BUILD of ``state``: a way to write the exact
    opcodes a crafted file would hold."""

    def __init__(self, callable_, args, state=None) -> None:
        self.reduced = (callable_, args) if state is None else (callable_, args, state)

    def __reduce__(self):
        return self.reduced


PLAIN_U1 = (3, "|", None, None, None, -1, -1, 0)  # the u1 dtype's state, as numpy pickles it


def forged_array(data, shape: tuple, dtype_state: tuple = PLAIN_U1) -> Reduced:
    """An array pickled as numpy pickles one, with the dtype's BUILD state and the bytes under our control."""
    _reconstruct = np.ndarray.__reduce__(np.zeros(1, np.uint8))[0]  # numpy 1 and 2 name it differently

    dtype = Reduced(np.dtype, ("u1", False, True), dtype_state)
    return Reduced(_reconstruct, (np.ndarray, (0,), b"b"), (1, shape, dtype, False, data))


def batch(**entries) -> bytes:
    """A pickled batch: a good one, with ``entries`` (bytes keys given as str) replaced; None drops one."""
    content = {b"batch_label": b"testing batch 1 of 1", b"data": np.zeros((10_000, 3072), np.uint8),
               b"labels": [i % 10 for i in range(10_000)]}
    for key, value in entries.items():
        if value is None:
            content.pop(key.encode())
        else:
            content[key.encode()] = value
    return pickle.dumps(content, protocol=4)


def self_containing() -> list:
    loop: list = []
    loop.append(loop)
    return loop


REAL = object()  # stands for the first megabyte of the real file
NESTED = [[[[[[[[[[0]]]]]]]]]]

# (id, bytes of test_batch (of batches.meta for "meta-*"), fragment of the message)
BAD_BATCHES = [
    ("data-missing", lambda: batch(data=None), "'data' is missing, expected a uint8 array of shape (10000, 3072)"),
    ("data-list", lambda: batch(data=[0] * 3072), "'data' is a list, expected a uint8 array of shape (10000, 3072)"),
    ("data-bytes", lambda: batch(data=bytes(10_000 * 3072)), "'data' is a bytes, expected a uint8 array"),
    ("data-10-rows", lambda: batch(data=np.zeros((10, 3072), np.uint8)),
     "'data' is a uint8 array of shape (10, 3072), expected a uint8 array of shape (10000, 3072)"),
    ("data-3d", lambda: batch(data=np.zeros((10_000, 3, 1024), np.uint8)), "a uint8 array of shape (10000, 3, 1024)"),
    ("data-transposed", lambda: batch(data=np.zeros((3072, 10_000), np.uint8)), "a uint8 array of shape (3072, 10000)"),
    ("data-int64", lambda: batch(data=np.zeros((10, 3072), np.int64)),  # small: a full one is over the size bound
     "cannot be read as a CIFAR-10 batch (UnsafePickleError: dtype 'i8' is not allowed (only u1))"),
    ("data-float32", lambda: batch(data=np.zeros((10, 3072), np.float32)), "dtype 'f4' is not allowed"),
    ("data-object", lambda: batch(data=np.zeros(3, dtype=object)), "dtype 'O8' is not allowed"),
    ("data-dtype-flags-forged", lambda: batch(data=forged_array(bytes(4), (4,), (*PLAIN_U1[:7], 63))),
     "dtype state (3, '|', None, None, None, -1, -1, 63) is not the plain u1 dtype"),
    ("data-dtype-fields-forged",
     lambda: batch(data=forged_array(bytes(4), (4,), (3, "|", None, ("a",), None, 1, 1, 0))), "is not the plain u1"),
    ("data-bytes-short", lambda: batch(data=forged_array(bytes(5), (10_000, 3072))),
     "array of shape (10000, 3072) with 5 bytes of data, expected 30720000"),
    ("data-negative-shape", lambda: batch(data=forged_array(bytes(4), (-1, 4))), "array shape (-1, 4) is not allowed"),
    ("data-not-bytes", lambda: batch(data=forged_array([0] * 4, (4,))), "array data is a list, expected bytes"),
    ("labels-missing", lambda: batch(labels=None), "'labels' is missing, expected a list of 10000 ints"),
    ("labels-short", lambda: batch(labels=[0] * 9_999), "'labels' is a list of 9999, expected a list of 10000 ints"),
    ("labels-long", lambda: batch(labels=[0] * 10_001), "'labels' is a list of 10001, expected a list of 10000 ints"),
    ("labels-array", lambda: batch(labels=np.zeros(10_000, np.uint8)),
     "'labels' is a uint8 array of shape (10000,), expected a list of 10000 ints"),
    ("labels-10", lambda: batch(labels=[0] * 9_999 + [10]), "labels span 0..10, outside 0-9"),
    ("labels-negative", lambda: batch(labels=[-1] + [0] * 9_999), "labels span -1..0, outside 0-9"),
    ("labels-huge", lambda: batch(labels=[2**70] + [0] * 9_999), f"labels span 0..{2**70}, outside 0-9"),
    ("labels-bytes", lambda: batch(labels=[b"3"] * 10_000), "'labels' holds a bytes, expected ints"),
    ("labels-float", lambda: batch(labels=[1.0] * 10_000), "'labels' holds a float, expected ints"),
    ("labels-bool", lambda: batch(labels=[True] * 10_000), "'labels' holds a bool, expected ints"),
    ("not-a-dict", lambda: pickle.dumps([1, 2, 3], protocol=4), "holds a list, expected a dict"),
    ("truncated", lambda: REAL, "cannot be read as a CIFAR-10 batch (UnpicklingError: pickle data was truncated)"),
    ("empty", lambda: b"", "cannot be read as a CIFAR-10 batch (EOFError: Ran out of input)"),
    ("not-a-pickle", lambda: b"just some text\nover two lines\n",
     "cannot be read as a CIFAR-10 batch (UnpicklingError"),
    ("os-system", lambda: pickle.dumps({b"data": Reduced(os.system, ("true",))}, protocol=4),
     "global posix.system is not allowed in a CIFAR-10 batch"),
    ("builtins-eval", lambda: pickle.dumps(Reduced(eval, ("1",)), protocol=4), "global builtins.eval is not allowed"),
    ("protocol-2-bytes", lambda: pickle.dumps({b"data": b"x"}, protocol=2), "global _codecs.encode is not allowed"),
    ("self-containing-list", lambda: batch(labels=self_containing()), "a list that contains itself is not allowed"),
    ("nested-too-deep", lambda: batch(labels=NESTED), "nested deeper than 8 levels"),
    ("set", lambda: batch(labels={1, 2}), "a set is not allowed in a CIFAR-10 batch"),
    ("bare-dtype", lambda: batch(labels=Reduced(np.dtype, ("u1", False, True))), "a bare _Dtype is not allowed"),
    ("tuple-key", lambda: pickle.dumps({(b"data",): 1}, protocol=4), "dict keys other than bytes, str or int"),
    ("meta-no-names", lambda: pickle.dumps({b"num_cases_per_batch": 10_000}, protocol=4), "no list of label_names"),
    ("meta-non-ascii", lambda: pickle.dumps({b"label_names": ["é".encode()] * 10}, protocol=4),
     "label_names are not ASCII"),
    ("meta-other-names", lambda: pickle.dumps({b"label_names": [b"a"] * 10}, protocol=4), "label names ("),
]


@pytest.mark.parametrize(("make", "fragment"), [case[1:] for case in BAD_BATCHES], ids=[c[0] for c in BAD_BATCHES])
def test_bad_batch_is_a_one_line_error_naming_it(tmp_path: Path, cifar_dir: Path, monkeypatch, make, fragment,
                                                 request) -> None:
    """The md5 of the crafted file is made the expected one, so each check behind it is reached."""
    name = cifar10.META if request.node.callspec.id.startswith("meta-") else "test_batch"
    content = make()
    if content is REAL:
        content = (cifar_dir / cifar10.FOLDER / name).read_bytes()[:1_000_000]
    root = fake_folder(tmp_path, cifar_dir, {name: content})
    path = root / cifar10.FOLDER / name
    monkeypatch.setitem(cifar10.OFFICIAL_MD5, name, md5sum(path))
    with pytest.raises(DataError) as err:
        cifar10.load(root, "test")
    message = str(err.value)
    assert message.startswith(f"{path}: ") and fragment in message, message
    assert "\n" not in message


def test_crafted_batch_is_refused_by_md5_first(tmp_path: Path, cifar_dir: Path) -> None:
    root = fake_folder(tmp_path, cifar_dir, {"test_batch": batch(data=np.zeros((10, 3072), np.uint8))})
    with pytest.raises(DataError) as err:
        cifar10.load(root, "test")
    path = root / cifar10.FOLDER / "test_batch"
    assert str(err.value) == (f"{path}: md5 differs from the official {cifar10.OFFICIAL_MD5['test_batch']}; "
                              "the file is corrupt, truncated or altered")


def test_good_crafted_batch_is_read(tmp_path: Path, cifar_dir: Path, monkeypatch) -> None:
    """The checks refuse only what is wrong: numpy's own pickle of a right batch loads, Fortran order included."""
    pixels = np.arange(10_000 * 3072, dtype=np.uint64).astype(np.uint8).reshape(10_000, 3072)
    root = fake_folder(tmp_path, cifar_dir, {"test_batch": batch(data=np.asfortranarray(pixels))})
    monkeypatch.setitem(cifar10.OFFICIAL_MD5, "test_batch", md5sum(root / cifar10.FOLDER / "test_batch"))
    images, labels = cifar10.load(root, "test")
    assert np.array_equal(images.numpy().reshape(10_000, 3072), pixels) and images.is_contiguous()
    assert labels.tolist() == [i % 10 for i in range(10_000)]


def test_missing_file_is_named(tmp_path: Path, cifar_dir: Path) -> None:
    root = fake_folder(tmp_path, cifar_dir, {})
    (root / cifar10.FOLDER / "data_batch_3").unlink()
    with pytest.raises(DataError, match="missing data_batch_3"):
        cifar10.load(root, "train")


def test_missing_dataset_lists_paths_and_how_to_fix(tmp_path: Path, monkeypatch) -> None:
    import torchvision.datasets

    def offline(*args, **kwargs):
        raise RuntimeError("no network")

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", offline)
    with pytest.raises(DataError) as err:
        cifar10.load(tmp_path, "train")
    message = str(err.value)
    assert str(tmp_path / cifar10.FOLDER) in message
    assert "download failed" in message and "--data-dir" in message and "BENCH_DATA_DIR" in message


def test_unknown_split(cifar_dir: Path) -> None:
    with pytest.raises(UsageError, match="valid splits: train, test"):
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
