"""The ffcv loader and ``bench convert``: parity with the in-memory loader, seeding, limits,
thread count, conversion bookkeeping, and the one-line error when ffcv is missing."""

from __future__ import annotations

import gzip
import importlib.util
import json
import math
import os
import shutil
import subprocess
import sys

import pytest
import torch
from click.testing import CliRunner
from support import ROOT

from cnnbench.cli import main
from cnnbench.errors import BenchError
from cnnbench.plugins.ffcv_convert import cache_dir, default_dirs, ensure_beton, stamp_path, validate
from cnnbench.plugins.ffcv_loader import FfcvLoader
from cnnbench.plugins.loaders import MemoryLoader
from cnnbench.records import DatasetSpec, LoaderRequest, resolve

# ffcv is an optional extra; everything but the last test needs it
needs_ffcv = pytest.mark.skipif(importlib.util.find_spec("ffcv") is None, reason="pip install 'cnnbench[ffcv]'")


@pytest.fixture(scope="module", autouse=True)
def ffcv_cache(tmp_path_factory):
    """Every conversion of this module goes to one temporary cache dir, never to ~/.cache;
    module-scoped, so the variable is unset again before the next module's tests."""
    with pytest.MonkeyPatch.context() as mp:
        path = tmp_path_factory.mktemp("ffcv-cache")
        mp.setenv("BENCH_CACHE_DIR", str(path))
        yield path / "ffcv"


@pytest.fixture(scope="module")
def splits(data_dir, registry):
    loaded = {}

    def get(dataset: str, split: str = "test"):
        if (dataset, split) not in loaded:
            loaded[dataset, split] = resolve(registry.dataset(dataset).load)(data_dir, split)
        return loaded[dataset, split]

    return get


def make_request(registry, dataset, images, labels, data_dir, **kw) -> LoaderRequest:
    args = dict(dataset=registry.dataset(dataset), split="test", images=images, labels=labels, batch_size=500,
                shuffle=False, seed=0, device=torch.device("cpu"), data_dir=str(data_dir))
    return LoaderRequest(**{**args, **kw})


def collect(loader) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = zip(*loader, strict=True)
    return torch.cat(xs), torch.cat(ys)


@needs_ffcv
@pytest.mark.parametrize("dataset", ["mnist", "cifar10"])
def test_full_test_split_matches_memory_loader(registry, splits, data_dir, dataset):
    images, labels = splits(dataset)
    req = make_request(registry, dataset, images, labels, data_dir)
    loader = FfcvLoader(req)
    assert len(loader) == len(MemoryLoader(req)) == math.ceil(len(labels) / 500)
    x, y = collect(loader)
    xm, ym = collect(MemoryLoader(req))
    assert x.shape == (len(labels), *registry.dataset(dataset).image_shape) and x.dtype == torch.float32
    assert y.dtype == torch.int64 and x.is_contiguous()
    assert torch.equal(y, labels) and torch.equal(y, ym)
    assert torch.equal(x, xm)  # the same pixels, finished by the same code
@needs_ffcv
def test_same_seed_same_batches_new_order_each_epoch(registry, splits, data_dir):
    images, labels = splits("mnist")
    req = make_request(registry, "mnist", images[:2000], labels[:2000], data_dir, shuffle=True, seed=5,
                       batch_size=200)
    a, b = FfcvLoader(req), FfcvLoader(req)
    xa, ya = collect(a)
    xb, yb = collect(b)
    assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert not torch.equal(ya, labels[:2000])  # shuffled …
    assert torch.equal(ya.sort().values, labels[:2000].sort().values)  # … but a permutation of the slice
    assert not torch.equal(collect(a)[1], ya)  # epoch 2 has its own order
    other = FfcvLoader(make_request(registry, "mnist", images[:2000], labels[:2000], data_dir, shuffle=True,
                                    seed=6, batch_size=200))
    assert not torch.equal(collect(other)[1], ya)
@needs_ffcv
def test_limited_request_reads_only_the_first_samples(registry, splits, data_dir):
    images, labels = splits("mnist")
    req = make_request(registry, "mnist", images[:1234], labels[:1234], data_dir, batch_size=100, drop_last=True)
    loader = FfcvLoader(req)
    assert len(loader) == 12
    x, y = collect(loader)
    assert torch.equal(y, labels[:1200])
    assert torch.equal(x, collect(MemoryLoader(req))[0])
@needs_ffcv
def test_batch_and_sample_augmentations_match_memory_loader(registry, splits, data_dir):
    images, labels = splits("mnist")
    for name in ("rotate10", "rotate10-tv"):
        req = make_request(registry, "mnist", images[:600], labels[:600], data_dir, batch_size=200,
                           augmentation=registry.augmentation(name))
        torch.manual_seed(0)  # the per-sample torchvision rotation draws from the global generator
        x, _ = collect(FfcvLoader(req))
        torch.manual_seed(0)
        xm, _ = collect(MemoryLoader(req))
        assert torch.equal(x, xm), name
        plain = collect(FfcvLoader(make_request(registry, "mnist", images[:600], labels[:600], data_dir)))[0]
        assert not torch.equal(x, plain), name  # the augmentation did something
@needs_ffcv
def test_loader_keeps_torch_thread_count(registry, splits, data_dir):
    """ffcv sets torch's threads to its worker count on Loader() and on every epoch."""
    images, labels = splits("mnist")
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        req = make_request(registry, "mnist", images[:1000], labels[:1000], data_dir, options={"workers": 1})
        loader = FfcvLoader(req)
        assert torch.get_num_threads() == 2
        for _ in loader:
            assert torch.get_num_threads() == 2
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
@needs_ffcv
def test_import_keeps_torch_thread_count():
    code = (
        "import torch\ntorch.set_num_threads(2)\n"
        "from cnnbench.plugins.ffcv_convert import require_ffcv\nrequire_ffcv()\n"
        "print(torch.get_num_threads())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.split() == ["2"]


# --- conversion ------------------------------------------------------------------------------


def synthetic(name: str, shape: tuple[int, int, int], data: dict) -> DatasetSpec:
    """A dataset the converter has no file list for: the content is the fingerprint."""

    def load(data_dir, split):
        return data[split]

    return DatasetSpec(name, load, "synthetic", shape, 10, (0.5,) * shape[0], (0.25,) * shape[0])


@needs_ffcv
@pytest.mark.parametrize("shape", [(1, 6, 5), (3, 4, 4)])
def test_conversion_is_redone_only_when_the_content_changes(tmp_path, shape):
    g = torch.Generator().manual_seed(0)
    data = {"train": (torch.randint(0, 256, (50, *shape), dtype=torch.uint8, generator=g), torch.arange(50) % 10)}
    spec = synthetic(f"synth{shape[0]}", shape, data)
    messages = []
    first = ensure_beton(spec, "train", out_dir=tmp_path, log=messages.append, workers=1)
    assert first.written and first.count == 50 and first.path.is_file() and stamp_path(first.path).is_file()
    assert "converting" in messages[0] and str(first.path) in messages[0]
    assert not ensure_beton(spec, "train", out_dir=tmp_path, workers=1).written
    assert ensure_beton(spec, "train", out_dir=tmp_path, force=True, workers=1).written
    data["train"][0][7, 0, 1, 1] ^= 1
    assert ensure_beton(spec, "train", out_dir=tmp_path, workers=1).written
    with open(first.path, "ab") as fh:  # a damaged file is not up to date
        fh.write(b"x")
    assert ensure_beton(spec, "train", out_dir=tmp_path, workers=1).written
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []  # no temporary files left
    req = LoaderRequest(spec, "train", *data["train"], batch_size=16, shuffle=False, seed=0,
                        device=torch.device("cpu"), options={"ffcv_dir": str(tmp_path)})
    assert torch.equal(collect(FfcvLoader(req))[0], collect(MemoryLoader(req))[0])


@needs_ffcv
def test_bad_samples_are_refused_before_writing(tmp_path):
    good = (torch.zeros(4, 1, 6, 5, dtype=torch.uint8), torch.zeros(4, dtype=torch.int64))
    spec = synthetic("synth", (1, 6, 5), {})
    validate(spec, *good)
    for images, labels, fragment in [
        (torch.zeros(4, 1, 6, 6, dtype=torch.uint8), good[1], "expected N x 1 x 6 x 5"),
        (torch.zeros(4, 1, 6, 5), good[1], "expected uint8"),
        (good[0], torch.zeros(3, dtype=torch.int64), "labels for 4 images"),
        (good[0], torch.full((4,), 10), "expected 0..9"),
        (good[0], torch.zeros(4), "expected integers"),
        (good[0][:0], good[1][:0], "the split is empty"),  # refused before hashing, which cannot take it
    ]:
        with pytest.raises(BenchError, match=fragment) as err:
            ensure_beton(synthetic("synth", (1, 6, 5), {"train": (images, labels)}), "train", out_dir=tmp_path)
        assert str(err.value).startswith("synth: ") and "\n" not in str(err.value)
    assert [p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")] == []  # nothing written


@needs_ffcv
def test_unusable_out_dir_and_split_are_one_line_errors(tmp_path):
    spec = synthetic("synth", (1, 6, 5), {"train": (torch.zeros(4, 1, 6, 5, dtype=torch.uint8), torch.arange(4))})
    read_only = tmp_path / "ro"
    read_only.mkdir(mode=0o555)
    try:
        with pytest.raises(BenchError) as err:
            ensure_beton(spec, "train", out_dir=read_only / "sub")
    finally:
        os.chmod(read_only, 0o755)
    assert str(err.value) == (f"cannot write ffcv files to {read_only / 'sub'} (read-only or cannot be created); "
                              "pass another --out DIR")
    with pytest.raises(BenchError, match=r"^unknown split 'val'; valid splits: train, test$"):
        ensure_beton(spec, "val", out_dir=tmp_path)


def copy_mnist_test(data_dir, target):
    raw = target / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for stem in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        shutil.copy(data_dir / "MNIST" / "raw" / f"{stem}.gz", raw / f"{stem}.gz")
    return raw
@needs_ffcv
def test_cli_convert_skips_up_to_date_and_redoes_changed_sources(tmp_path, data_dir):
    raw = copy_mnist_test(data_dir, tmp_path / "data")
    out = tmp_path / "out"
    args = ["convert", "--dataset", "mnist", "--split", "test", "--data-dir", str(tmp_path / "data"),
            "--out", str(out)]
    first = CliRunner().invoke(main, args)
    assert first.exit_code == 0, first.output
    assert "mnist test: wrote 10,000 images" in first.output
    stamp = json.loads(stamp_path(out / "mnist-test.beton").read_text())
    assert stamp["key"]["sources"]["files_md5"]["MNIST/raw/t10k-images-idx3-ubyte.gz"] == (
        "9fb629c4189551a2d022fa330f9573f3"
    )
    second = CliRunner().invoke(main, args)
    assert "mnist test: up to date (10,000 images)" in second.output, second.output
    # the same data as an uncompressed file is a different source: converted again
    gz = raw / "t10k-labels-idx1-ubyte.gz"
    (raw / "t10k-labels-idx1-ubyte").write_bytes(gzip.decompress(gz.read_bytes()))
    gz.unlink()
    third = CliRunner().invoke(main, args)
    assert "mnist test: wrote 10,000 images" in third.output, third.output
def test_cache_dir_order(monkeypatch, tmp_path):
    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path / "bench"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "bench" / "ffcv"
    monkeypatch.delenv("BENCH_CACHE_DIR")
    assert cache_dir() == tmp_path / "xdg" / "cnnbench" / "ffcv"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/cache")  # the XDG spec says to ignore it
    assert cache_dir() == tmp_path / "home" / ".cache" / "cnnbench" / "ffcv"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert cache_dir() == tmp_path / "home" / ".cache" / "cnnbench" / "ffcv"
    assert default_dirs(tmp_path / "data") == [tmp_path / "home" / ".cache" / "cnnbench" / "ffcv",
                                               tmp_path / "data" / "ffcv"]


def test_convert_help_says_where_files_go():
    result = CliRunner().invoke(main, ["convert", "--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "$BENCH_CACHE_DIR/ffcv" in text and "$XDG_CACHE_HOME/cnnbench/ffcv" in text
    assert "~/.cache/cnnbench/ffcv" in text and "nothing is written into the data dir unless --out names it" in text
    assert "first writable" not in text


def listing(root) -> dict[str, tuple[bool, int, int]]:
    """Every file and folder under ``root`` (``root`` included): is it a folder, size, mtime in ns."""
    entries = {}
    for folder, dirs, files in os.walk(root):
        for name in [".", *dirs, *files]:
            path = os.path.join(folder, name)
            info = os.lstat(path)
            entries[os.path.relpath(path, root)] = (os.path.isdir(path), info.st_size, info.st_mtime_ns)
    return entries


def writable_copy_of_mnist(data_dir, target):
    """All four MNIST raw files copied under ``target``, every file and folder writable."""
    shutil.copytree(data_dir / "MNIST", target / "MNIST")
    for folder, _, files in os.walk(target):
        os.chmod(folder, 0o755)
        for name in files:
            os.chmod(os.path.join(folder, name), 0o644)
    return target


@needs_ffcv
def test_conversion_and_loading_leave_a_writable_data_dir_untouched(tmp_path, data_dir, monkeypatch):
    """`bench convert` and the loader's conversion on first use write to the cache, never the data dir."""
    data = writable_copy_of_mnist(data_dir, tmp_path / "data")
    cache = tmp_path / "cache"
    monkeypatch.setenv("BENCH_CACHE_DIR", str(cache))
    before = listing(data)
    assert os.access(data / "MNIST" / "raw", os.W_OK)  # writable: the old default would have written here

    result = CliRunner().invoke(main, ["convert", "--dataset", "mnist", "--split", "test", "--data-dir", str(data)])
    assert result.exit_code == 0, result.output
    assert "mnist test: wrote 10,000 images" in result.output
    assert str(cache / "ffcv" / "mnist-test.beton") in result.output

    from cnnbench.plugins import mnist

    images, labels = mnist.load(data, "train")
    req = LoaderRequest(resolve_mnist(), "train", images[:512], labels[:512], batch_size=128,
                        shuffle=True, seed=0, device=torch.device("cpu"), data_dir=str(data),
                        options={"workers": 1})
    loader = FfcvLoader(req)  # the train split is converted on first use
    x, y = collect(loader)
    assert x.shape == (512, 1, 28, 28) and torch.equal(y.sort().values, labels[:512].sort().values)
    assert loader.path == cache / "ffcv" / "mnist-train.beton"
    del loader

    assert listing(data) == before  # same names, sizes and mtimes: nothing written, created or touched
    assert {p.name for p in (cache / "ffcv").glob("*.beton")} == {"mnist-test.beton", "mnist-train.beton"}


@needs_ffcv
def test_up_to_date_file_in_data_dir_is_read_but_never_written(tmp_path, data_dir, monkeypatch):
    """Files an earlier version converted into <data-dir>/ffcv are reused; a stale one is left
    as it is and the new conversion goes to the cache."""
    data = tmp_path / "data"
    raw = copy_mnist_test(data_dir, data)
    spec = resolve_mnist()
    legacy = data / "ffcv"
    old = ensure_beton(spec, "test", data, out_dir=legacy, workers=1)  # asked for: --out <data-dir>/ffcv
    assert old.written and old.path == legacy / "mnist-test.beton"
    cache = tmp_path / "cache"
    monkeypatch.setenv("BENCH_CACHE_DIR", str(cache))
    before = listing(data)

    reused = ensure_beton(spec, "test", data, workers=1)
    assert not reused.written and reused.path == old.path and reused.count == 10_000
    assert not cache.exists()  # nothing created just to look
    assert listing(data) == before

    # a changed source: the data dir's file is stale; it stays as it is and the new one goes to the cache
    gz = raw / "t10k-labels-idx1-ubyte.gz"
    (raw / "t10k-labels-idx1-ubyte").write_bytes(gzip.decompress(gz.read_bytes()))
    gz.unlink()
    before = listing(data)
    fresh = ensure_beton(spec, "test", data, workers=1)
    assert fresh.written and fresh.path == cache / "ffcv" / "mnist-test.beton"
    assert listing(data) == before
    assert not ensure_beton(spec, "test", data, workers=1).written  # and is reused from the cache


@needs_ffcv
def test_unwritable_cache_is_a_one_line_error_and_the_data_dir_is_not_used(tmp_path, data_dir, monkeypatch):
    data = tmp_path / "data"
    copy_mnist_test(data_dir, data)
    cache = tmp_path / "cache"
    cache.mkdir(mode=0o555)
    monkeypatch.setenv("BENCH_CACHE_DIR", str(cache))
    try:
        result = CliRunner().invoke(main, ["convert", "--dataset", "mnist", "--split", "test", "--data-dir",
                                           str(data)])
    finally:
        os.chmod(cache, 0o755)
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    assert f"cannot write ffcv files to {cache / 'ffcv'}" in lines[0]
    assert "set BENCH_CACHE_DIR or pass --out DIR" in lines[0]
    assert not (data / "ffcv").exists() and not (cache / "ffcv").exists()


def resolve_mnist() -> DatasetSpec:
    from cnnbench.plugins.mnist import cnnbench_datasets

    return cnnbench_datasets()[0]


@needs_ffcv
def test_bench_run_with_ffcv_loader_converts_on_first_use(tmp_path, data_dir, monkeypatch):
    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path / "cache"))
    args = ["run", "--model", "mnist_gap", "--loader", "ffcv", "--epochs", "1", "--limit-train", "1024",
            "--limit-test", "512", "--data-dir", str(data_dir), "--results-dir", str(tmp_path / "results"),
            "--no-progress"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "ffcv: converting mnist train (60,000 images" in result.output  # converted on first use, and said so
    assert (tmp_path / "cache" / "ffcv" / "mnist-test.beton").is_file()
    [path] = (tmp_path / "results").glob("*.json")
    record = json.loads(path.read_text())
    assert record["loader"] == "ffcv" and record["train_images"] == 1024 and record["test_images"] == 512
    assert record["threads"] == torch.get_num_threads()


# --- without ffcv ------------------------------------------------------------------------------


def test_without_ffcv_the_loader_is_a_one_line_error_and_the_rest_works(tmp_path, data_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "ffcv", None)  # find_spec -> None, import -> ImportError
    runner = CliRunner()
    for args in (["run", "--model", "mnist_gap", "--loader", "ffcv", "--data-dir", str(data_dir)],
                 ["convert", "--dataset", "mnist", "--out", str(tmp_path / "out")]):
        result = runner.invoke(main, args)
        assert result.exit_code == 1, result.output
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert len(lines) == 1 and "Traceback" not in result.output, result.output
        assert "ffcv" in lines[0] and "pip install 'cnnbench[ffcv]'" in lines[0] and "libturbojpeg0-dev" in lines[0]
    assert not (tmp_path / "out").exists()
    listed = runner.invoke(main, ["list", "loaders"])
    assert listed.exit_code == 0 and "ffcv" in listed.output and "memory" in listed.output
    run = runner.invoke(main, ["run", "--model", "mnist_gap", "--epochs", "1", "--limit-train", "256",
                               "--limit-test", "256", "--data-dir", str(data_dir), "--results-dir", str(tmp_path),
                               "--no-progress"])
    assert run.exit_code == 0, run.output
    with pytest.raises(BenchError, match="pip install 'cnnbench"):
        from cnnbench.plugins.ffcv_convert import require_ffcv

        require_ffcv()


@needs_ffcv
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dataset", ["mnist", "cifar10"])
def test_cuda_batches_match_memory_loader_behind_a_busy_gpu(registry, splits, data_dir, dataset):
    """ffcv reuses its host buffers; a GPU running far behind the host must still get each batch's own pixels."""
    images, labels = splits(dataset)
    req = make_request(registry, dataset, images, labels, data_dir, batch_size=100, device=torch.device("cuda"))
    got = []
    for x, y in FfcvLoader(req):
        torch.cuda._sleep(2_000_000)  # queue GPU work so the host runs ahead of the device, as training does
        got.append((x.clone(), y.clone()))
    x, y = (torch.cat(parts).cpu() for parts in zip(*got, strict=True))
    xm, ym = (t.cpu() for t in collect(MemoryLoader(req)))
    assert torch.equal(y, labels) and torch.equal(y, ym)
    assert torch.equal(x, xm)


CONVERT_AND_READ = """
import sys
from cnnbench.plugins.ffcv_convert import ensure_beton
from cnnbench.plugins.mnist import cnnbench_datasets
spec = cnnbench_datasets()[0]
done = ensure_beton(spec, "test", sys.argv[1], out_dir=sys.argv[2], log=lambda m: print(m, flush=True))
print("wrote" if done.written else "reused", flush=True)
"""


@needs_ffcv
def test_runs_started_together_convert_once(tmp_path, data_dir, registry, splits):
    """Several processes asking for the same missing file: one converts, the others wait and reuse it."""
    out = tmp_path / "out"
    procs = [
        subprocess.Popen([sys.executable, "-c", CONVERT_AND_READ, str(data_dir), str(out)], cwd=ROOT,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    outputs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs
    finals = sorted(stdout.strip().splitlines()[-1] for stdout, _ in outputs)
    assert finals == ["reused", "reused", "wrote"], outputs
    images, labels = splits("mnist")
    req = make_request(registry, "mnist", images, labels, data_dir, options={"ffcv_dir": str(out)})
    assert torch.equal(collect(FfcvLoader(req))[0], collect(MemoryLoader(req))[0])
