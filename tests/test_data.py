"""Tests of minilottery.data and .dataformats: formats, search order, checksums, errors, split,
normalisation, minibatches, and the real MNIST / CIFAR-10 files.

Small fake datasets are generated in tmp_path; dataformats' checksum tables
are substituted with the checksums of the fake files (which also exercises
the verification code). Downloads are tested in test_download.py.
"""

import gzip
import hashlib
import io
import json
import os
import pickle
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from minilottery import data, dataformats
from minilottery.data import (ChecksumError, DataError, DataFormatError, DatasetNotFoundError,
                              load_cifar10, load_mnist, minibatches)
from minilottery.shared import SharedArrays

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"
MNIST_STEMS = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte",
               "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]
CIFAR_BATCHES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]


# ---------------------------------------------------------------- helpers

def md5(raw):
    return hashlib.md5(raw).hexdigest()


def idx_bytes(array, magic_ndim=None):
    """An IDX file for a uint8 array: 0 0 8 ndim, big-endian sizes, data."""
    ndim = array.ndim if magic_ndim is None else magic_ndim
    header = bytes([0, 0, 8, ndim]) + np.array(array.shape, ">u4").tobytes()
    return header + np.ascontiguousarray(array, np.uint8).tobytes()


def fake_mnist(folder, monkeypatch, n_train=40, n_test=12, gz=True, seed=0, files=None):
    """Write four small IDX files; image i of the training set has pixel (0, 0) = i."""
    rng = np.random.default_rng(seed)
    x_train = rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8)
    x_train[:, 0, 0] = np.arange(n_train)
    arrays = {
        "train-images-idx3-ubyte": x_train,
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train).astype(np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test).astype(np.uint8),
    }
    files = dict(files or {})
    folder.mkdir(parents=True, exist_ok=True)
    table = {}
    for stem, array in arrays.items():
        raw = files.get(stem, idx_bytes(array))
        table[stem] = md5(raw)
        if gz:
            (folder / (stem + ".gz")).write_bytes(gzip.compress(raw))
        else:
            (folder / stem).write_bytes(raw)
    monkeypatch.setattr(dataformats, "MNIST_MD5", table)
    return arrays


def fake_cifar(n=6, seed=0):
    """Raw python-batch bytes for CIFAR_BATCHES + batches.meta, and the NCHW arrays they hold."""
    rng = np.random.default_rng(seed)
    raw, xs, ys = {}, {}, {}
    for name in CIFAR_BATCHES:
        x = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
        y = rng.integers(0, 10, n)
        batch = {b"batch_label": name.encode(), b"labels": [int(v) for v in y],
                 b"data": x.reshape(n, 3072), b"filenames": [b"f.png"] * n}
        # The canonical files are Python-2 pickles naming numpy.core.multiarray.
        blob = pickle.dumps(batch, protocol=2).replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
        raw[name], xs[name], ys[name] = blob, x, y
    names = [c.encode() for c in dataformats.CIFAR10_CLASSES]
    raw["batches.meta"] = pickle.dumps({b"label_names": names, b"num_vis": 3072}, protocol=2)
    x_train = np.concatenate([xs[f"data_batch_{i}"] for i in range(1, 6)])
    y_train = np.concatenate([ys[f"data_batch_{i}"] for i in range(1, 6)])
    return raw, (x_train, y_train, xs["test_batch"], ys["test_batch"])


def use_batch_md5(monkeypatch, raw):
    monkeypatch.setattr(dataformats, "CIFAR10_BATCH_MD5", {name: md5(raw[name]) for name in CIFAR_BATCHES})


def write_folder(folder, raw):
    folder.mkdir(parents=True, exist_ok=True)
    for name, blob in raw.items():
        (folder / name).write_bytes(blob)


def write_tar(path, raw, monkeypatch):
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        for name, blob in raw.items():
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    monkeypatch.setattr(dataformats, "CIFAR10_TAR_MD5", md5(path.read_bytes()))


def write_npz(path, arrays, **override):
    x_train, y_train, x_test, y_test = arrays
    content = dict(x_train=x_train.transpose(0, 2, 3, 1), y_train=y_train.astype(np.uint8),
                   x_test=x_test.transpose(0, 2, 3, 1), y_test=y_test.astype(np.uint8),
                   classes=np.array(dataformats.CIFAR10_CLASSES))
    content.update(override)
    content = {k: v for k, v in content.items() if v is not None}
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **content)


def pixel_ids(ds, split="train"):
    """Recover the training-set index stored in pixel (0, 0) of MNIST fakes (normalize=False)."""
    x = getattr(ds, f"x_{split}")
    return np.rint(x[:, 0, 0, 0] * 255).astype(int)


# ---------------------------------------------------------------- MNIST formats, split, normalisation

@pytest.mark.parametrize("gz", [True, False], ids=["gzip", "raw"])
def test_mnist_formats_load_raw_pixels(isolated, monkeypatch, gz):
    arrays = fake_mnist(isolated / "d" / "mnist", monkeypatch, gz=gz)
    ds = load_mnist(isolated / "d", val_size=10, normalize=False, download=False)
    assert ds.x_train.shape == (30, 1, 28, 28) and ds.x_val.shape == (10, 1, 28, 28)
    assert ds.x_test.shape == (12, 1, 28, 28)
    for x in (ds.x_train, ds.x_val, ds.x_test):
        assert x.dtype == np.float32 and x.flags.c_contiguous
    for y in (ds.y_train, ds.y_val, ds.y_test):
        assert y.dtype == np.int64
    ids = pixel_ids(ds)
    np.testing.assert_array_equal(ds.x_train[:, 0], arrays["train-images-idx3-ubyte"][ids] / np.float32(255))
    np.testing.assert_array_equal(ds.y_train, arrays["train-labels-idx1-ubyte"][ids])
    np.testing.assert_array_equal(ds.x_test[:, 0], arrays["t10k-images-idx3-ubyte"] / np.float32(255))
    np.testing.assert_array_equal(ds.y_test, arrays["t10k-labels-idx1-ubyte"])
    assert ds.x_train.min() >= 0 and ds.x_train.max() <= 1
    np.testing.assert_array_equal(ds.mean, [0]) and np.testing.assert_array_equal(ds.std, [1])
    assert ds.classes == tuple("0123456789") and ds.num_classes == 10


@settings(deadline=None, max_examples=20)
@given(val_size=st.integers(0, 39), seed=st.integers(0, 2**32 - 1))
def test_validation_split_is_a_seeded_partition(tmp_path_factory, val_size, seed):
    folder = tmp_path_factory.mktemp("split")
    with pytest.MonkeyPatch.context() as mp:
        fake_mnist(folder, mp)
        ds = load_mnist(folder, val_size=val_size, val_seed=seed, normalize=False, download=False)
        again = load_mnist(folder, val_size=val_size, val_seed=seed, normalize=False, download=False)
    train, val = pixel_ids(ds), pixel_ids(ds, "val")
    assert len(val) == val_size and len(train) == 40 - val_size
    assert sorted(np.concatenate([train, val]).tolist()) == list(range(40))
    # the held-out examples are the first val_size of the seeded permutation
    expected_val = np.sort(np.random.default_rng(seed).permutation(40)[:val_size])
    np.testing.assert_array_equal(val, expected_val)
    np.testing.assert_array_equal(ds.x_val, again.x_val)


def test_different_val_seeds_hold_out_different_examples(isolated, monkeypatch):
    fake_mnist(isolated / "mnist", monkeypatch)
    a = load_mnist(isolated, val_size=10, val_seed=0, normalize=False, download=False)
    b = load_mnist(isolated, val_size=10, val_seed=1, normalize=False, download=False)
    assert set(pixel_ids(a, "val")) != set(pixel_ids(b, "val"))


def test_mnist_normalised_with_training_split_statistics(isolated, monkeypatch):
    fake_mnist(isolated / "mnist", monkeypatch)
    raw = load_mnist(isolated, val_size=10, normalize=False, download=False)
    ds = load_mnist(isolated, val_size=10, download=False)
    pixels = raw.x_train.astype(np.float64)  # the training split only, independent float64 stats
    assert ds.mean.shape == (1,) and ds.mean.dtype == np.float32 and ds.std.dtype == np.float32
    np.testing.assert_allclose(ds.mean, [pixels.mean()], rtol=1e-6)
    np.testing.assert_allclose(ds.std, [pixels.std()], rtol=1e-6)
    for split in ("train", "val", "test"):
        expected = (getattr(raw, f"x_{split}") - ds.mean[0]) / ds.std[0]
        got = getattr(ds, f"x_{split}")
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    assert abs(ds.x_train.mean(dtype=np.float64)) < 1e-5
    assert abs(ds.x_train.std(dtype=np.float64) - 1) < 1e-5



def test_loading_into_shared_memory_gives_the_same_dataset_bit_for_bit(isolated, monkeypatch):
    fake_mnist(isolated / "mnist", monkeypatch)
    expected = load_mnist(isolated, val_size=10, download=False)
    made = []
    with SharedArrays() as shared:
        def allocate(shape, dtype):
            made.append(shared.empty(shape, dtype))
            return made[-1]
        ds = load_mnist(isolated, val_size=10, download=False, allocate=allocate)
        assert len(made) == 3 and all(a is b for a, b in zip(made, (ds.x_train, ds.x_val, ds.x_test)))
        for split in ("train", "val", "test"):
            got, want = getattr(ds, f"x_{split}"), getattr(expected, f"x_{split}")
            assert got.dtype == want.dtype and got.shape == want.shape
            assert got.tobytes() == want.tobytes()
            np.testing.assert_array_equal(getattr(ds, f"y_{split}"), getattr(expected, f"y_{split}"))

def test_val_size_must_fit(isolated, monkeypatch):
    fake_mnist(isolated / "mnist", monkeypatch)
    for bad in (40, -1, 2.5, True):
        with pytest.raises(ValueError, match="val_size"):
            load_mnist(isolated, val_size=bad, download=False)
    ds = load_mnist(isolated, val_size=0, download=False)
    assert ds.x_val.shape == (0, 1, 28, 28) and ds.y_val.shape == (0,)


# ---------------------------------------------------------------- CIFAR-10 formats

def test_cifar_all_formats_give_the_same_data(isolated, monkeypatch):
    raw, arrays = fake_cifar()
    use_batch_md5(monkeypatch, raw)
    write_folder(isolated / "a" / "cifar10" / "cifar-10-batches-py", raw)
    write_folder(isolated / "b", raw)  # data_dir pointing straight at the batches
    write_tar(isolated / "c" / "cifar10" / "cifar-10-python.tar.gz", raw, monkeypatch)
    write_npz(isolated / "d" / "cifar10" / "fake.npz", arrays)
    (isolated / "d" / "cifar10" / "fake.npz").rename(isolated / "d" / "cifar10" / "cifar10-jpeg.npz")
    npz_bytes = (isolated / "d" / "cifar10" / "cifar10-jpeg.npz").read_bytes()
    monkeypatch.setattr(dataformats, "CIFAR10_NPZ_SHA256", hashlib.sha256(npz_bytes).hexdigest())
    loaded = {}
    for root in "abcd":
        ds = load_cifar10(isolated / root, val_size=6, normalize=False, download=False)
        assert ds.x_train.shape == (24, 3, 32, 32) and ds.x_val.shape == (6, 3, 32, 32)
        assert ds.x_test.shape == (6, 3, 32, 32) and ds.x_train.dtype == np.float32
        assert ds.y_train.dtype == np.int64 and ds.classes == dataformats.CIFAR10_CLASSES
        loaded[root] = ds
    assert loaded["a"].source.endswith("cifar-10-batches-py")
    assert loaded["c"].source.endswith(".tar.gz") and loaded["d"].source.endswith(".npz")
    # every format gives the canonical pixels in NCHW order, split identically
    x_train, y_train, x_test, y_test = arrays
    keep = np.sort(np.random.default_rng(0).permutation(30)[6:])
    for ds in loaded.values():
        np.testing.assert_array_equal(ds.x_train, x_train[keep] / np.float32(255))
        np.testing.assert_array_equal(ds.y_train, y_train[keep])
        np.testing.assert_array_equal(ds.x_test, x_test / np.float32(255))
        np.testing.assert_array_equal(ds.y_test, y_test)


def test_cifar_normalised_per_channel_with_training_statistics(isolated, monkeypatch):
    raw, arrays = fake_cifar()
    raw_batches = {k: v for k, v in raw.items()}
    use_batch_md5(monkeypatch, raw)
    write_folder(isolated / "cifar10", raw_batches)
    plain = load_cifar10(isolated, val_size=6, normalize=False, download=False)
    ds = load_cifar10(isolated, val_size=6, download=False)
    pixels = plain.x_train.astype(np.float64)
    assert ds.mean.shape == ds.std.shape == (3,)
    np.testing.assert_allclose(ds.mean, pixels.mean(axis=(0, 2, 3)), rtol=1e-6)
    np.testing.assert_allclose(ds.std, pixels.std(axis=(0, 2, 3)), rtol=1e-6)
    shape = (1, 3, 1, 1)
    for split in ("train", "val", "test"):
        expected = (getattr(plain, f"x_{split}") - ds.mean.reshape(shape)) / ds.std.reshape(shape)
        np.testing.assert_allclose(getattr(ds, f"x_{split}"), expected, rtol=1e-5, atol=1e-5)


def test_cifar_prefers_canonical_batches_over_npz(isolated, monkeypatch):
    raw, arrays = fake_cifar()
    use_batch_md5(monkeypatch, raw)
    write_folder(isolated / "cifar10" / "cifar-10-batches-py", raw)
    write_npz(isolated / "cifar10" / "cifar10-jpeg.npz", arrays)  # would fail its checksum if read
    ds = load_cifar10(isolated, val_size=6, download=False)
    assert ds.source.endswith("cifar-10-batches-py")


def test_cifar_classes_default_without_meta(isolated, monkeypatch):
    raw, _ = fake_cifar()
    del raw["batches.meta"]
    use_batch_md5(monkeypatch, raw)
    write_folder(isolated / "cifar10", raw)
    assert load_cifar10(isolated, val_size=6, download=False).classes == dataformats.CIFAR10_CLASSES


# ---------------------------------------------------------------- where data is looked for

def test_search_order_data_dir_env_project_cache(isolated, monkeypatch):
    places = {"arg": isolated / "arg", "env": isolated / "env",
              "project": isolated / "project", "cache": isolated / "xdg" / "minilottery"}
    sizes = {"arg": 30, "env": 31, "project": 32, "cache": 33}
    tables = {}
    for key, root in places.items():
        fake_mnist(root / "mnist", monkeypatch, n_train=sizes[key])
        tables[key] = dict(dataformats.MNIST_MD5)
    monkeypatch.setenv("MINILOTTERY_DATA", str(places["env"]))
    order = ["arg", "env", "project", "cache"]
    for i, key in enumerate(order):
        monkeypatch.setattr(dataformats, "MNIST_MD5", tables[key])
        data_dir = places["arg"] if i == 0 else None
        ds = load_mnist(data_dir, val_size=5, download=False)
        assert len(ds.x_train) + len(ds.x_val) == sizes[key]
        assert ds.source == str(places[key] / "mnist")
        # remove this place so the next one is found
        for f in (places[key] / "mnist").iterdir():
            f.unlink()


def test_data_dir_may_point_at_the_dataset_folder(isolated, monkeypatch):
    fake_mnist(isolated / "here", monkeypatch)
    ds = load_mnist(isolated / "here", val_size=5, download=False)
    assert ds.source == str(isolated / "here")


def test_missing_dataset_lists_every_place_and_how_to_get_it(isolated, monkeypatch):
    with pytest.raises(DatasetNotFoundError) as info:
        load_mnist(download=False)
    message = str(info.value)
    for place in (isolated / "project" / "mnist", isolated / "xdg" / "minilottery" / "mnist"):
        assert str(place) in message
    assert "MINILOTTERY_DATA is not set" in message and "download=True" in message
    assert "train-images-idx3-ubyte" in message
    assert isinstance(info.value, DataError) and isinstance(info.value, FileNotFoundError)

    (isolated / "envroot").mkdir()
    monkeypatch.setenv("MINILOTTERY_DATA", str(isolated / "envroot"))
    with pytest.raises(DatasetNotFoundError) as info:
        load_cifar10(download=False)
    message = str(info.value)
    assert str(isolated / "envroot" / "cifar10") in message and "cifar-10-python.tar.gz" in message
    assert str(isolated / "project" / "cifar10") in message


# An explicit place is honoured: never skipped, never replaced by another one.

def test_explicit_data_dir_without_the_dataset_does_not_fall_back(isolated, monkeypatch):
    fake_mnist(isolated / "project" / "mnist", monkeypatch)  # a dataset the search could fall back to
    empty = isolated / "empty"
    empty.mkdir()
    with pytest.raises(DatasetNotFoundError) as info:
        load_mnist(empty, val_size=5, download=False)
    message = str(info.value)
    assert str(empty / "mnist") in message and f"{empty}  (data_dir argument)" in message
    assert str(isolated / "project") not in message


def test_explicit_data_dir_without_the_dataset_is_downloaded_into(isolated, monkeypatch):
    fake_mnist(isolated / "project" / "mnist", monkeypatch)
    empty = isolated / "empty"
    empty.mkdir()
    # stands in for the download (tested in test_download.py): the same files, in the target
    monkeypatch.setattr(data, "_download_mnist", lambda folder: fake_mnist(folder, monkeypatch))
    ds = load_mnist(empty, val_size=5)
    assert ds.source == str(empty / "mnist") and ds.provenance["found_by"] == "downloaded"


@pytest.mark.parametrize("kind", ["missing", "file"])
@pytest.mark.parametrize("loader", [load_mnist, load_cifar10], ids=["mnist", "cifar10"])
def test_explicit_data_dir_that_is_not_a_folder_is_an_error_naming_it(isolated, monkeypatch, kind, loader):
    fake_mnist(isolated / "project" / "mnist", monkeypatch)
    place = isolated / "typo"
    if kind == "file":
        place.write_text("not a folder")
    expected = "is a file, not a folder" if kind == "file" else "does not exist"
    with pytest.raises(DatasetNotFoundError, match=f"data_dir {place} {expected}"):
        loader(place, val_size=5)  # download=True: nothing is downloaded into a typo
    assert not (isolated / "typo" / "mnist").exists()


@pytest.mark.parametrize("kind", ["missing", "file"])
def test_env_var_that_is_not_a_folder_is_an_error_naming_it(isolated, monkeypatch, kind):
    fake_mnist(isolated / "project" / "mnist", monkeypatch)
    place = isolated / "typo"
    if kind == "file":
        place.write_text("not a folder")
    monkeypatch.setenv("MINILOTTERY_DATA", str(place))
    with pytest.raises(DatasetNotFoundError, match=r"\$MINILOTTERY_DATA " + str(place)):
        load_mnist(val_size=5)


def test_env_var_folder_without_this_dataset_falls_through(isolated, monkeypatch):
    """$MINILOTTERY_DATA may hold CIFAR-10 only: MNIST is then found further down."""
    (isolated / "env" / "cifar10").mkdir(parents=True)
    fake_mnist(isolated / "project" / "mnist", monkeypatch)
    monkeypatch.setenv("MINILOTTERY_DATA", str(isolated / "env"))
    ds = load_mnist(val_size=5, download=False)
    assert ds.provenance["found_by"] == "the project's data/ folder"


def test_partial_mnist_folder_is_not_found_and_says_what_is_missing(isolated, monkeypatch):
    fake_mnist(isolated / "mnist", monkeypatch)
    (isolated / "mnist" / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DatasetNotFoundError, match=r"missing t10k-labels-idx1-ubyte\[\.gz\]"):
        load_mnist(isolated, download=False)


# ---------------------------------------------------------------- corrupt and malformed files

def test_corrupted_mnist_names_file_and_both_checksums(isolated, monkeypatch):
    fake_mnist(isolated / "mnist", monkeypatch, gz=False)
    path = isolated / "mnist" / "train-labels-idx1-ubyte"
    blob = bytearray(path.read_bytes())
    blob[-1] ^= 0xFF
    path.write_bytes(bytes(blob))
    with pytest.raises(ChecksumError) as info:
        load_mnist(isolated, download=False)
    message = str(info.value)
    assert str(path) in message and dataformats.MNIST_MD5["train-labels-idx1-ubyte"] in message
    assert md5(bytes(blob)) in message
    assert info.value.actual == md5(bytes(blob)) and isinstance(info.value, ValueError)


def test_truncated_real_mnist_gz_is_a_checksum_error(isolated):
    """The real MNIST file, cut short: its published md5 is reported, no gzip traceback."""
    real = REPO / "data" / "mnist"
    folder = isolated / "cut" / "mnist"
    folder.mkdir(parents=True)
    for stem in MNIST_STEMS:
        (folder / (stem + ".gz")).write_bytes((real / (stem + ".gz")).read_bytes())
    victim = folder / "t10k-labels-idx1-ubyte.gz"
    victim.write_bytes(victim.read_bytes()[:2000])
    with pytest.raises(ChecksumError) as info:
        load_mnist(isolated / "cut", download=False)
    message = str(info.value)
    assert str(victim) in message and "27ae3e4e09519cfbb04c329615203637" in message
    assert "decompression stopped" in message


@pytest.mark.parametrize("stem, content, pattern", [
    ("train-images-idx3-ubyte", idx_bytes(np.zeros((40, 28, 28), np.uint8), magic_ndim=1), "magic"),
    ("train-labels-idx1-ubyte", b"\x00\x00\x08", "magic"),
    ("t10k-images-idx3-ubyte", idx_bytes(np.zeros((12, 28, 28), np.uint8))[:-5], "header says shape"),
    ("t10k-images-idx3-ubyte", idx_bytes(np.zeros((12, 28, 27), np.uint8)), r"expected \(28, 28\)"),
    ("t10k-labels-idx1-ubyte", idx_bytes(np.zeros(11, np.uint8)), "12 images but"),
    ("t10k-labels-idx1-ubyte", idx_bytes(np.full(12, 10, np.uint8)), r"labels must lie in \[0, 10\)"),
])
def test_malformed_idx_says_what_is_wrong(isolated, monkeypatch, stem, content, pattern):
    fake_mnist(isolated / "mnist", monkeypatch, files={stem: content})
    with pytest.raises(DataFormatError, match=pattern) as info:
        load_mnist(isolated, download=False)
    assert "idx" in str(info.value)


def _batches_with(monkeypatch, folder, name, blob):
    raw, _ = fake_cifar()
    raw[name] = blob
    use_batch_md5(monkeypatch, raw)
    write_folder(folder, raw)


@pytest.mark.parametrize("payload, pattern", [
    ({b"pixels": np.zeros((6, 3072), np.uint8), b"labels": [0] * 6}, "needs keys 'data' and 'labels'"),
    ({b"data": np.zeros((6, 1024), np.uint8), b"labels": [0] * 6}, r"uint8 \(N, 3072\)"),
    ({b"data": np.zeros((6, 3072), np.uint8), b"labels": [0] * 5}, "6 images but 5 labels"),
    ([1, 2, 3], "expected a pickled dict"),
])
def test_malformed_batch_says_what_is_wrong(isolated, monkeypatch, payload, pattern):
    _batches_with(monkeypatch, isolated / "cifar10", "data_batch_3", pickle.dumps(payload, protocol=2))
    with pytest.raises(DataFormatError, match=pattern) as info:
        load_cifar10(isolated, download=False)
    assert "data_batch_3" in str(info.value)


class _Evil:
    def __reduce__(self):
        return (os.mkdir, ("should-not-exist",))


def test_batch_pickle_may_not_run_code(isolated, monkeypatch):
    monkeypatch.chdir(isolated)
    _batches_with(monkeypatch, isolated / "cifar10", "test_batch", pickle.dumps({b"data": _Evil()}))
    with pytest.raises(DataFormatError, match="refusing to load"):
        load_cifar10(isolated, download=False)
    assert not (isolated / "should-not-exist").exists()


def test_corrupted_batch_and_tar_are_checksum_errors(isolated, monkeypatch):
    raw, _ = fake_cifar()
    use_batch_md5(monkeypatch, raw)
    good = dict(raw)
    raw["data_batch_2"] = raw["data_batch_2"][:-100]
    write_folder(isolated / "f" / "cifar10", raw)
    with pytest.raises(ChecksumError, match="data_batch_2") as info:
        load_cifar10(isolated / "f", download=False)
    assert dataformats.CIFAR10_BATCH_MD5["data_batch_2"] in str(info.value)

    tar = isolated / "t" / "cifar10" / "cifar-10-python.tar.gz"
    write_tar(tar, good, monkeypatch)
    tar.write_bytes(tar.read_bytes()[:-50])
    with pytest.raises(ChecksumError) as info:
        load_cifar10(isolated / "t", download=False)
    assert str(tar) in str(info.value) and dataformats.CIFAR10_TAR_MD5 in str(info.value)


def test_tar_without_batches_says_so(isolated, monkeypatch):
    raw, _ = fake_cifar()
    del raw["test_batch"]
    write_tar(isolated / "cifar10" / "cifar-10-python.tar.gz", raw, monkeypatch)
    with pytest.raises(DataFormatError, match="lacks test_batch"):
        load_cifar10(isolated, download=False)


def test_npz_with_unknown_content_fails_its_checksum(isolated):
    _, arrays = fake_cifar()
    path = isolated / "cifar10" / "cifar10-jpeg.npz"
    write_npz(path, arrays)
    with pytest.raises(ChecksumError) as info:
        load_cifar10(isolated, download=False)
    message = str(info.value)
    assert str(path) in message and dataformats.CIFAR10_NPZ_SHA256 in message
    assert hashlib.sha256(path.read_bytes()).hexdigest() in message


@pytest.mark.parametrize("override, pattern", [
    (dict(y_test=None), "needs keys"),
    (dict(x_train=np.zeros((30, 3, 32, 32), np.uint8)), r"'x_train' must be uint8 \(N, 32, 32, 3\)"),
    (dict(x_test=np.zeros((6, 32, 32, 3), np.float32)), "'x_test' must be uint8"),
    (dict(y_train=np.zeros(29, np.uint8)), "30 images in 'x_train' but 29 labels"),
    (dict(y_train=np.full(30, 12, np.uint8)), r"labels must lie in \[0, 10\)"),
])
def test_malformed_npz_says_what_is_wrong(isolated, monkeypatch, override, pattern):
    _, arrays = fake_cifar()
    path = isolated / "cifar10" / "cifar10-jpeg.npz"
    write_npz(path, arrays, **override)
    monkeypatch.setattr(dataformats, "CIFAR10_NPZ_SHA256", hashlib.sha256(path.read_bytes()).hexdigest())
    with pytest.raises(DataFormatError, match=pattern) as info:
        load_cifar10(isolated, download=False)
    assert str(path) in str(info.value)


def test_npz_that_is_not_a_zip_says_so(isolated, monkeypatch):
    path = isolated / "cifar10" / "cifar10-jpeg.npz"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"this is not a zip archive")
    monkeypatch.setattr(dataformats, "CIFAR10_NPZ_SHA256", hashlib.sha256(path.read_bytes()).hexdigest())
    with pytest.raises(DataFormatError, match="not a readable .npz"):
        load_cifar10(isolated, download=False)


# ---------------------------------------------------------------- minibatches

@settings(deadline=None, max_examples=60)
@given(n=st.integers(1, 50), batch_size=st.integers(1, 70), seed=st.integers(0, 2**32 - 1),
       n_batches=st.integers(1, 40))
def test_minibatches_cut_the_stream_of_seeded_epoch_permutations(n, batch_size, seed, n_batches):
    batches = [b for _, b in zip(range(n_batches), minibatches(n, batch_size, seed))]
    assert all(len(b) == batch_size and b.dtype == np.int64 for b in batches)
    # the reference: permutations of default_rng(seed), laid end to end
    rng = np.random.default_rng(seed)
    n_epochs = -(-n_batches * batch_size // n)
    epochs = [rng.permutation(n) for _ in range(n_epochs)]
    stream = np.concatenate(epochs)
    np.testing.assert_array_equal(np.concatenate(batches), stream[:n_batches * batch_size])
    for epoch in epochs:  # each epoch visits every example exactly once
        assert sorted(epoch.tolist()) == list(range(n))


def test_minibatches_paper_setting():
    it = minibatches(55000, 60, seed=3)
    batches = [next(it) for _ in range(917)]
    first_epoch = np.concatenate(batches)[:55000]
    assert sorted(first_epoch.tolist()) == list(range(55000))
    assert len(batches[916]) == 60  # 40 from epoch 0, 20 from epoch 1
    again = minibatches(55000, 60, seed=3)
    np.testing.assert_array_equal(next(again), batches[0])
    assert not np.array_equal(next(minibatches(55000, 60, seed=4)), batches[0])


@pytest.mark.parametrize("n, bs", [(0, 1), (10, 0), (-1, 5), (10, 2.0), (True, 3)])
def test_minibatches_reject_bad_arguments(n, bs):
    with pytest.raises(ValueError, match="positive integer"):
        next(minibatches(n, bs, 0))


# ---------------------------------------------------------------- provenance

def file_md5(path, decompress=False):
    raw = path.read_bytes()
    return md5(gzip.decompress(raw) if decompress else raw)


@pytest.mark.parametrize("gz", [True, False], ids=["gzip", "raw"])
def test_mnist_provenance_names_the_files_and_their_verified_checksums(isolated, monkeypatch, gz):
    folder = isolated / "d" / "mnist"
    fake_mnist(folder, monkeypatch, gz=gz)
    ds = load_mnist(isolated / "d", val_size=10, download=False)
    record = json.loads(json.dumps(ds.provenance))  # JSON-able, and unchanged by the round trip
    assert record == ds.provenance
    assert record["dataset"] == "mnist" and record["source"] == str(folder.resolve())
    assert record["found_by"] == "data_dir argument"
    assert record["examples"] == {"train": 30, "val": 10, "test": 12}
    suffix = ".gz" if gz else ""
    assert [entry["path"] for entry in record["files"]] == [
        str((folder / (stem + suffix)).resolve()) for stem in MNIST_STEMS]
    for entry in record["files"]:
        assert entry["algorithm"] == "md5" and entry["of"] == "the decompressed content"
        assert entry["checksum"] == file_md5(Path(entry["path"]), decompress=gz)


def test_cifar_provenance_for_each_format(isolated, monkeypatch):
    raw, arrays = fake_cifar()
    use_batch_md5(monkeypatch, raw)
    write_folder(isolated / "a" / "cifar10" / "cifar-10-batches-py", raw)
    write_tar(isolated / "c" / "cifar10" / "cifar-10-python.tar.gz", raw, monkeypatch)
    npz = isolated / "d" / "cifar10" / "cifar10-jpeg.npz"
    write_npz(isolated / "d" / "cifar10" / "fake.npz", arrays)
    (isolated / "d" / "cifar10" / "fake.npz").rename(npz)
    monkeypatch.setattr(dataformats, "CIFAR10_NPZ_SHA256", hashlib.sha256(npz.read_bytes()).hexdigest())
    monkeypatch.setenv("MINILOTTERY_DATA", str(isolated / "c"))

    batches = load_cifar10(isolated / "a", val_size=6, download=False).provenance
    assert [Path(e["path"]).name for e in batches["files"]] == CIFAR_BATCHES
    assert all(e["checksum"] == file_md5(Path(e["path"])) and e["of"] == "the file"
               for e in batches["files"])
    tar = load_cifar10(val_size=6, download=False).provenance
    assert tar["found_by"] == "$MINILOTTERY_DATA"
    assert tar["files"] == [{"path": str((isolated / "c" / "cifar10" / "cifar-10-python.tar.gz").resolve()),
                             "algorithm": "md5", "of": "the file",
                             "checksum": file_md5(isolated / "c" / "cifar10" / "cifar-10-python.tar.gz")}]
    packed = load_cifar10(isolated / "d", val_size=6, download=False).provenance
    assert packed["files"] == [{"path": str(npz.resolve()), "algorithm": "sha256", "of": "the file",
                                "checksum": hashlib.sha256(npz.read_bytes()).hexdigest()}]
    assert packed["source"] == str(npz.resolve()) and packed["examples"]["val"] == 6


# ---------------------------------------------------------------- the command line

def run_cli(*args, env=None):
    environment = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.run([sys.executable, "-m", "minilottery.run", *map(str, args)],
                          capture_output=True, text=True, env=environment, timeout=300)


@pytest.mark.parametrize("kind", ["empty", "missing", "file"])
def test_cli_data_dir_without_mnist_is_an_error_and_writes_nothing(tmp_path, kind):
    """Before: an empty --data-dir fell back to the bundled MNIST and the run trained on it."""
    place = tmp_path / "place"
    if kind == "empty":
        place.mkdir()
    elif kind == "file":
        place.write_text("not a folder")
    result = run_cli("lenet", "--iterations", "20", "--eval-every", "10", "--rounds", "1",
                     "--data-dir", place, "--no-download", "--no-plots", "--out", tmp_path / "run")
    assert result.returncode == 2, result.stdout
    assert str(place) in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------- the real files

# Published class counts of canonical MNIST (train, test).
MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_real_mnist_shipped_in_the_repo(monkeypatch):
    monkeypatch.delenv("MINILOTTERY_DATA", raising=False)
    ds = load_mnist(download=False)  # found in the project's data/ folder, checksums verified
    assert ds.source == str(REPO / "data" / "mnist")
    assert ds.provenance["found_by"] == "the project's data/ folder"
    assert {Path(e["path"]).name.split(".")[0]: e["checksum"] for e in ds.provenance["files"]} \
        == dataformats.MNIST_MD5
    assert ds.x_train.shape == (55000, 1, 28, 28) and ds.x_val.shape == (5000, 1, 28, 28)
    assert ds.x_test.shape == (10000, 1, 28, 28)
    counts = np.bincount(ds.y_train, minlength=10) + np.bincount(ds.y_val, minlength=10)
    assert counts.tolist() == MNIST_TRAIN_COUNTS
    assert np.bincount(ds.y_test).tolist() == MNIST_TEST_COUNTS
    # the well-known full-training-set statistics 0.1307 / 0.3081 hold for any 55,000 of them
    assert abs(ds.mean[0] - 0.1307) < 2e-3 and abs(ds.std[0] - 0.3081) < 2e-3
    assert abs(float(ds.x_train.mean(dtype=np.float64))) < 1e-4


def _cifar_root():
    for root in filter(None, [os.environ.get("MINILOTTERY_DATA"), str(SHARED_DATA)]):
        if (Path(root) / "cifar10" / "cifar10-jpeg.npz").is_file():
            return Path(root)
    return None


def _measure(code):
    """Run code in a fresh interpreter; it prints one JSON line. Add its peak RSS in MB.

    The peak is VmHWM of /proc/self/status: it belongs to the new process image.
    (ru_maxrss would not do: Linux carries it over from the forking parent, here pytest.)
    """
    wrapper = ("import json, re\n" + code +
               "\nstatus = open('/proc/self/status').read()"
               "\nresult['peak_mb'] = int(re.search(r'VmHWM:\\s+(\\d+) kB', status)[1]) / 1024"
               "\nprint(json.dumps(result))")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    out = subprocess.run([sys.executable, "-c", wrapper], capture_output=True, text=True,
                         env=env, cwd=REPO, timeout=300)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc/self/status (Linux)")
def test_real_mnist_peak_memory_under_400_mb():
    result = _measure(
        "from minilottery.data import load_mnist\n"
        "ds = load_mnist(download=False)\n"
        "result = {'n': len(ds.x_train)}\n")
    assert result["n"] == 55000
    assert result["peak_mb"] < 400, result


@pytest.mark.skipif(_cifar_root() is None, reason="CIFAR-10 copy not found (set MINILOTTERY_DATA "
                    "to a folder holding cifar10/cifar10-jpeg.npz, or place it in ../shared/data)")
@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc/self/status (Linux)")
def test_real_cifar10_shapes_counts_checksum_and_memory():
    result = _measure(
        "import numpy as np\n"
        "from minilottery.data import load_cifar10\n"
        f"ds = load_cifar10({str(_cifar_root())!r}, download=False)\n"
        "peak_after_load = int(re.search(r'VmHWM:\\s+(\\d+) kB', open('/proc/self/status').read())[1])\n"
        "result = dict(peak_after_load_mb=peak_after_load / 1024,\n"
        "    shapes=[list(x.shape) for x in (ds.x_train, ds.x_val, ds.x_test)],\n"
        "    dtypes=[str(x.dtype) for x in (ds.x_train, ds.y_train)],\n"
        "    counts=(np.bincount(ds.y_train, minlength=10) + np.bincount(ds.y_val, minlength=10)).tolist(),\n"
        "    test_counts=np.bincount(ds.y_test, minlength=10).tolist(), classes=list(ds.classes),\n"
        "    mean=ds.x_train.mean(axis=(0, 2, 3), dtype=np.float64).tolist(),\n"
        "    std=ds.x_train[::9].std(axis=(0, 2, 3), dtype=np.float64).tolist())\n")
    assert result["shapes"] == [[45000, 3, 32, 32], [5000, 3, 32, 32], [10000, 3, 32, 32]]
    assert result["dtypes"] == ["float32", "int64"]
    assert result["counts"] == [5000] * 10 and result["test_counts"] == [1000] * 10
    assert result["classes"] == list(dataformats.CIFAR10_CLASSES)
    np.testing.assert_allclose(result["mean"], 0, atol=1e-4)
    np.testing.assert_allclose(result["std"], 1, atol=0.02)  # on every 9th image
    assert result["peak_after_load_mb"] < 1500, result


def py2_batch_pickle(x, labels):
    """A batch pickled the way Python 2 + NumPy 1.x wrote the canonical files:
    protocol 2, str as BINSTRING, arrays via numpy.core.multiarray._reconstruct."""
    import struct

    def string(b):  # Python-2 str: SHORT_BINSTRING or BINSTRING
        return (b"U" + bytes([len(b)]) if len(b) < 256 else b"T" + struct.pack("<i", len(b))) + b

    def small_int(i):
        return b"K" + bytes([i]) if i < 256 else b"M" + struct.pack("<H", i)

    rows, cols = x.shape
    dtype = b"cnumpy\ndtype\n" + string(b"u1") + b"K\x00K\x01\x87R" + \
        b"(K\x03" + string(b"|") + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb"
    array = (b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n" + b"K\x00\x85" + string(b"b")
             + b"\x87R" + b"(K\x01" + small_int(rows) + small_int(cols) + b"\x86" + dtype
             + b"\x89" + string(x.tobytes()) + b"tb")
    label_list = b"](" + b"".join(small_int(int(v)) for v in labels) + b"e"
    return (b"\x80\x02}(" + string(b"data") + array + string(b"labels") + label_list
            + string(b"batch_label") + string(b"training batch 1 of 5") + b"u.")


def test_python2_style_batch_pickle_is_read(isolated, monkeypatch):
    """The canonical batches are Python-2 pickles; we cannot ship them, so we write one by hand."""
    rng = np.random.default_rng(5)
    x = rng.integers(0, 256, (3, 3072), dtype=np.uint8)
    labels = [7, 0, 9]
    blob = py2_batch_pickle(x, labels)
    images, y = dataformats._parse_batch(blob, "py2-batch")
    np.testing.assert_array_equal(images, x.reshape(3, 3, 32, 32))
    np.testing.assert_array_equal(y, labels)
    assert y.dtype == np.int64
