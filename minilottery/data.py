"""MNIST and CIFAR-10: find, verify, read, split, normalise; and minibatches.

    ds = load_mnist()                  # or load_cifar10()
    ds.x_train.shape                   # (55000, 1, 28, 28) float32, NCHW
    ds.y_train.dtype                   # int64 class ids
    for step, idx in zip(range(1000), minibatches(len(ds.x_train), 60, seed=0)):
        xb, yb = ds.x_train[idx], ds.y_train[idx]

Where the data is looked for (first hit wins), for ``name`` in {mnist, cifar10}:

1. the ``data_dir`` argument,
2. the ``MINILOTTERY_DATA`` environment variable,
3. the project's own ``data/`` folder (MNIST ships there),
4. the per-user cache ``$XDG_CACHE_HOME/minilottery`` (default ``~/.cache/minilottery``).

Each of these is a *root*: the dataset is looked for in ``<root>/<name>/``
and then in ``<root>`` itself (so ``data_dir`` may point straight at the
dataset's folder). If nothing is found and ``download=True``, the canonical
files are downloaded into ``<first of data_dir, $MINILOTTERY_DATA, cache>/<name>/``.

Accepted files in a dataset folder:

* MNIST: the four IDX files, gzip-compressed (``train-images-idx3-ubyte.gz``)
  or raw (``train-images-idx3-ubyte``).
* CIFAR-10, in this order of preference: the extracted ``cifar-10-batches-py/``
  folder (or the folder itself holding ``data_batch_1`` ...), the canonical
  ``cifar-10-python.tar.gz`` (read in place, never extracted), or
  ``cifar10-jpeg.npz`` (keys x_train uint8 (N, 32, 32, 3), y_train, x_test,
  y_test, classes).

Every file is checked against its published checksum before it is parsed
(MNIST: md5 of the *decompressed* bytes, so re-compressed copies pass), so a
corrupt or truncated file fails loudly instead of training on garbage.

Split and normalisation (the paper is silent; these are our choices):
``val_size`` training examples, drawn with ``np.random.default_rng(val_seed)``,
become the validation set (5,000 by default, as in the paper). Pixels are
scaled to [0, 1] and then standardised, x <- (x - mean) / std, with the mean
and standard deviation of the remaining *training* split only (one scalar for
MNIST, one per colour channel for CIFAR-10); validation and test use the same
statistics, stored on the Dataset as ``.mean`` and ``.std``.
"""

from __future__ import annotations

import codecs
import gzip
import hashlib
import importlib
import io
import os
import pickle
import tarfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

__all__ = [
    "Dataset",
    "load_mnist",
    "load_cifar10",
    "minibatches",
    "data_roots",
    "cache_dir",
    "DataError",
    "DatasetNotFoundError",
    "ChecksumError",
    "DataFormatError",
]

# --------------------------------------------------------------------------
# Where the files are and what they must hash to. Module-level so that tests
# (and users behind a proxy) can substitute their own mirrors.
# --------------------------------------------------------------------------

#: The repository's top-level data/ folder (MNIST ships in data/mnist/).
PROJECT_DATA_DIR = Path(__file__).resolve().parent.parent / "data"
ENV_VAR = "MINILOTTERY_DATA"

#: Base URLs, tried in order; a file's URL is base + name + ".gz".
MNIST_MIRRORS = (
    "http://yann.lecun.com/exdb/mnist/",
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
)
#: IDX file name -> md5 of its *decompressed* bytes.
MNIST_MD5 = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}
MNIST_CLASSES = tuple(str(d) for d in range(10))

CIFAR10_URLS = ("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",)
CIFAR10_TAR = "cifar-10-python.tar.gz"
CIFAR10_TAR_MD5 = "c58f30108f718f92721af3b95e74349a"
CIFAR10_FOLDER = "cifar-10-batches-py"
#: Batch file (in the tar.gz or the extracted folder) -> md5 of the file.
CIFAR10_BATCH_MD5 = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
}
CIFAR10_NPZ = "cifar10-jpeg.npz"
CIFAR10_NPZ_SHA256 = "ab1f5d2b32b133b1662e6f3fbe606a2035f0190849e88b6ef2d75d920d30bf47"
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck")

_CHUNK = 1 << 20  # bytes per read when hashing or decompressing


# --------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------

class DataError(Exception):
    """Base class of every data problem; catch this to catch them all."""


class DatasetNotFoundError(DataError, FileNotFoundError):
    """No usable copy of the dataset anywhere we looked (and no download)."""


class ChecksumError(DataError, ValueError):
    """A file's content does not hash to its published checksum."""

    def __init__(self, path, algorithm, expected, actual, what="the file", note=""):
        self.path, self.expected, self.actual = Path(path), expected, actual
        super().__init__(
            f"{path}: {algorithm} of {what} is {actual}, expected {expected}{note}. "
            "The file is corrupt, truncated or not the canonical one: delete it and "
            "download it again (e.g. with download=True)."
        )


class DataFormatError(DataError, ValueError):
    """A file is readable but is not what its name promises (magic, keys, shapes)."""


# --------------------------------------------------------------------------
# The Dataset
# --------------------------------------------------------------------------

@dataclass(repr=False)
class Dataset:
    """Three splits of one dataset, ready for training.

    x_*: float32 (N, C, H, W); y_*: int64 (N,) class ids in [0, len(classes)).
    mean, std: float32 (C,), the statistics applied, x = (pixel/255 - mean) / std
               (zeros and ones when loaded with normalize=False).
    source:    the file or folder the data was read from.
    """

    name: str
    classes: tuple
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    source: str = ""
    val_seed: int = field(default=0)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __repr__(self) -> str:
        return (f"Dataset({self.name!r}: train {self.x_train.shape}, val {self.x_val.shape}, "
                f"test {self.x_test.shape}, {self.num_classes} classes, "
                f"mean {_fmt(self.mean)}, std {_fmt(self.std)}, "
                f"from {self.source})")


def _fmt(values) -> str:
    return "[" + ", ".join(f"{v:.4f}" for v in values) + "]"


# --------------------------------------------------------------------------
# Public loaders
# --------------------------------------------------------------------------

def load_mnist(data_dir=None, *, val_size=5000, val_seed=0, normalize=True, download=True) -> Dataset:
    """MNIST: 60,000 training and 10,000 test digits, 1x28x28.

    Returns a Dataset with (60,000 - val_size) training and val_size validation
    examples (the held-out ones drawn with ``np.random.default_rng(val_seed)``).
    See the module docstring for where the files are looked for.
    """
    folder, looked = _find("mnist", data_dir, _mnist_missing)
    if folder is None:
        folder = _download_or_raise("MNIST", "mnist", data_dir, looked, download, _download_mnist,
                                    needs="the four files " + ", ".join(s + "[.gz]" for s in MNIST_MD5))
    x_train, y_train = _read_mnist_pair(folder, "train")
    x_test, y_test = _read_mnist_pair(folder, "t10k")
    return _build("mnist", MNIST_CLASSES, x_train, y_train, x_test, y_test,
                  val_size, val_seed, normalize, str(folder))


def load_cifar10(data_dir=None, *, val_size=5000, val_seed=0, normalize=True, download=True) -> Dataset:
    """CIFAR-10: 50,000 training and 10,000 test colour images, 3x32x32.

    Reads the canonical python batches (extracted folder or tar.gz) or the
    .npz layout (see the module docstring); (50,000 - val_size) training and
    val_size validation examples.
    """
    source, looked = _find("cifar10", data_dir, _cifar_missing)
    if source is None:
        folder = _download_or_raise("CIFAR-10", "cifar10", data_dir, looked, download, _download_cifar10,
                                    needs=f"one of {CIFAR10_FOLDER}/, {CIFAR10_TAR}, {CIFAR10_NPZ}")
        source = folder / CIFAR10_TAR
    else:
        source = _cifar_source(source)
    if source.suffix == ".npz":
        arrays = _read_cifar_npz(source)
    elif source.is_dir():
        arrays = _read_cifar_folder(source)
    else:
        arrays = _read_cifar_tar(source)
    x_train, y_train, x_test, y_test, classes = arrays
    return _build("cifar10", classes, x_train, y_train, x_test, y_test,
                  val_size, val_seed, normalize, str(source))


# --------------------------------------------------------------------------
# Minibatches
# --------------------------------------------------------------------------

def minibatches(n_examples: int, batch_size: int, seed) -> Iterator[np.ndarray]:
    """Yield int64 index arrays of length ``batch_size``, forever.

    Epoch e is the permutation number e drawn from ``np.random.default_rng(seed)``;
    the permutations are laid end to end and cut into consecutive batches. So
    every batch has exactly ``batch_size`` indices, every example is used
    exactly once per epoch, and a batch *may straddle two epochs* (e.g. with
    the paper's 55,000 examples and batches of 60, batch 916 holds the last 40
    of epoch 0 and the first 20 of epoch 1; such a batch can, rarely, hold the
    same example twice). Only indices are produced: index the data with them
    (``x[idx]``), the dataset itself is never copied or shuffled.
    """
    n_examples, batch_size = _positive_int(n_examples, "n_examples"), _positive_int(batch_size, "batch_size")
    rng = np.random.default_rng(seed)
    order = rng.permutation(n_examples)
    pos = 0
    while True:
        if pos + batch_size <= n_examples:  # the common case: a slice of this epoch
            yield order[pos:pos + batch_size]
            pos += batch_size
            continue
        parts, need = [], batch_size
        while need > 0:
            if pos == n_examples:
                order, pos = rng.permutation(n_examples), 0
            take = min(need, n_examples - pos)
            parts.append(order[pos:pos + take])
            pos += take
            need -= take
        yield np.concatenate(parts)


def _positive_int(value, name: str) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


# --------------------------------------------------------------------------
# Finding the files
# --------------------------------------------------------------------------

def cache_dir() -> Path:
    """The per-user cache: $XDG_CACHE_HOME/minilottery or ~/.cache/minilottery."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "minilottery"


def data_roots(data_dir=None) -> list[tuple[Path, str]]:
    """The roots searched, in order, each with a note saying where it comes from."""
    roots = []
    if data_dir is not None:
        roots.append((Path(data_dir).expanduser(), "data_dir argument"))
    if os.environ.get(ENV_VAR):
        roots.append((Path(os.environ[ENV_VAR]).expanduser(), f"${ENV_VAR}"))
    roots.append((PROJECT_DATA_DIR, "the project's data/ folder"))
    roots.append((cache_dir(), "per-user cache"))
    return roots


def _find(name, data_dir, missing):
    """First folder ``<root>/<name>`` or ``<root>`` with nothing missing.

    ``missing(folder)`` returns "" if the folder holds the dataset, else a short
    description of what is missing. Returns (folder or None, lines describing
    every place looked).
    """
    looked = []
    for root, why in data_roots(data_dir):
        if root == PROJECT_DATA_DIR and not os.environ.get(ENV_VAR):
            looked.append(f"  ${ENV_VAR} is not set")
        for folder in (root / name, root):
            problem = missing(folder)
            if not problem:
                return folder, looked
            looked.append(f"  {folder}  ({why}): {problem}")
    return None, looked


def _mnist_file(folder: Path, stem: str) -> Path | None:
    for candidate in (folder / (stem + ".gz"), folder / stem):
        if candidate.is_file():
            return candidate
    return None


def _mnist_missing(folder: Path) -> str:
    if not folder.is_dir():
        return "no such folder"
    absent = [stem + "[.gz]" for stem in MNIST_MD5 if _mnist_file(folder, stem) is None]
    return "missing " + ", ".join(absent) if absent else ""


def _cifar_candidates(folder: Path) -> list[Path]:
    """The CIFAR-10 sources present in ``folder``, in order of preference."""
    found = []
    for batches in (folder / CIFAR10_FOLDER, folder):
        if all((batches / b).is_file() for b in CIFAR10_BATCH_MD5):
            found.append(batches)
    for file in (folder / CIFAR10_TAR, folder / CIFAR10_NPZ):
        if file.is_file():
            found.append(file)
    return found


def _cifar_missing(folder: Path) -> str:
    if not folder.is_dir():
        return "no such folder"
    if _cifar_candidates(folder):
        return ""
    return f"none of {CIFAR10_FOLDER}/, {CIFAR10_TAR}, {CIFAR10_NPZ}"


def _cifar_source(folder: Path) -> Path:
    return _cifar_candidates(folder)[0]


def _download_or_raise(title, name, data_dir, looked, download, fetch_into, needs):
    """Download into the first writable root, or raise DatasetNotFoundError."""
    env = os.environ.get(ENV_VAR)
    target = Path(data_dir if data_dir is not None else env if env else cache_dir()).expanduser() / name
    how = (f"A folder holds {title} when it has {needs}.\n"
           f"To get it: call with download=True (fetches the canonical files into {target}), "
           f"or put the files in one of the folders above, or point {ENV_VAR} (or data_dir) "
           f"at a folder that holds {name}/.")
    if not download:
        raise DatasetNotFoundError(f"{title} not found (download=False). Looked in, in order:\n"
                                   + "\n".join(looked) + "\n" + how)
    from minilottery import download as dl  # imported here: only needed when fetching
    try:
        fetch_into(target)
    except dl.DownloadError as exc:
        raise DatasetNotFoundError(f"{title} not found, and the download failed. Looked in, in order:\n"
                                   + "\n".join(looked) + f"\n{exc}\n" + how) from exc
    return target


def _download_mnist(folder: Path) -> None:
    from minilottery import download as dl
    for stem, md5 in MNIST_MD5.items():
        if _mnist_file(folder, stem) is None:
            dest = folder / (stem + ".gz")

            def verify(tmp, dest=dest, md5=md5):
                _mnist_bytes(tmp, md5, shown_as=dest)

            dl.fetch([base + stem + ".gz" for base in MNIST_MIRRORS], dest, verify)


def _download_cifar10(folder: Path) -> None:
    from minilottery import download as dl
    dest = folder / CIFAR10_TAR

    def verify(tmp):
        _check_file_hash(tmp, "md5", CIFAR10_TAR_MD5, shown_as=dest)

    dl.fetch(CIFAR10_URLS, dest, verify)


# --------------------------------------------------------------------------
# Checksums
# --------------------------------------------------------------------------

def _check_file_hash(path: Path, algorithm: str, expected: str, shown_as=None) -> None:
    """Hash the file in chunks (constant memory); raise ChecksumError on mismatch."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    if digest.hexdigest() != expected:
        raise ChecksumError(shown_as or path, algorithm, expected, digest.hexdigest())


# --------------------------------------------------------------------------
# MNIST: IDX files
# --------------------------------------------------------------------------

def _mnist_bytes(path: Path, expected_md5: str, shown_as=None) -> bytearray:
    """The file's (decompressed, if .gz) bytes, after checking their md5."""
    shown_as = shown_as or path
    digest, content = hashlib.md5(), bytearray()
    try:
        with (gzip.open(path, "rb") if _is_gzip(path) else open(path, "rb")) as f:
            while chunk := f.read(_CHUNK):
                digest.update(chunk)
                content += chunk
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:  # truncated or damaged stream
        raise ChecksumError(shown_as, "md5", expected_md5, digest.hexdigest(),
                            "the decompressed content",
                            f" (decompression stopped after {len(content)} bytes: {exc})") from None
    if digest.hexdigest() != expected_md5:
        raise ChecksumError(shown_as, "md5", expected_md5, digest.hexdigest(), "the decompressed content")
    return content


def _is_gzip(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == b"\x1f\x8b"


def _parse_idx(content, path, ndim: int) -> np.ndarray:
    """An IDX file: magic (0, 0, 0x08 = uint8, ndim), ndim big-endian uint32 sizes, data."""
    header = 4 + 4 * ndim
    if len(content) < header or bytes(content[:4]) != bytes([0, 0, 8, ndim]):
        raise DataFormatError(f"{path}: not an IDX file of uint8 with {ndim} dimension(s): "
                              f"magic is {bytes(content[:4]).hex()}, expected {bytes([0, 0, 8, ndim]).hex()}")
    shape = tuple(int(s) for s in np.frombuffer(content, ">u4", count=ndim, offset=4))
    if len(content) - header != int(np.prod(shape)):
        raise DataFormatError(f"{path}: header says shape {shape} = {int(np.prod(shape))} bytes of data, "
                              f"the file holds {len(content) - header}")
    return np.frombuffer(content, np.uint8, offset=header).reshape(shape)


def _read_mnist_pair(folder: Path, prefix: str):
    """(images uint8 (N, 1, 28, 28), labels int64 (N,)) for prefix 'train' or 't10k'."""
    stems = f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"
    paths = [_mnist_file(folder, stem) for stem in stems]
    images = _parse_idx(_mnist_bytes(paths[0], MNIST_MD5[stems[0]]), paths[0], 3)
    labels = _parse_idx(_mnist_bytes(paths[1], MNIST_MD5[stems[1]]), paths[1], 1)
    if images.shape[1:] != (28, 28):
        raise DataFormatError(f"{paths[0]}: images are {images.shape[1:]}, expected (28, 28)")
    if len(images) != len(labels):
        raise DataFormatError(f"{paths[0]} holds {len(images)} images but {paths[1]} {len(labels)} labels")
    return images[:, None], _labels(labels, 10, paths[1])


def _labels(y, n_classes: int, path) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise DataFormatError(f"{path}: labels must be a 1-d integer array, got {y.dtype} {y.shape}")
    if y.size and (y.min() < 0 or y.max() >= n_classes):
        raise DataFormatError(f"{path}: labels must lie in [0, {n_classes}), got [{y.min()}, {y.max()}]")
    return y.astype(np.int64)


# --------------------------------------------------------------------------
# CIFAR-10: python batches (folder or tar.gz) and the .npz layout
# --------------------------------------------------------------------------

class _BatchUnpickler(pickle.Unpickler):
    """Unpickles a CIFAR batch, refusing anything but plain data and NumPy arrays.

    A pickle can run arbitrary code when loaded; the canonical batches only
    need these few constructors, so a tampered file fails instead of running.
    """

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
    }

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        if module == "_codecs":
            return codecs.encode
        if module.startswith("numpy.core."):  # NumPy 2 moved numpy.core to numpy._core
            try:
                return getattr(importlib.import_module("numpy._core." + module[11:]), name)
            except ImportError:  # NumPy 1.x
                pass
        return getattr(importlib.import_module(module), name)


def _unpickle_batch(raw: bytes, path) -> dict:
    try:
        batch = _BatchUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except Exception as exc:  # any failure here means "not a CIFAR batch"
        raise DataFormatError(f"{path}: not a CIFAR-10 python batch ({type(exc).__name__}: {exc})") from None
    if not isinstance(batch, dict):
        raise DataFormatError(f"{path}: expected a pickled dict, got {type(batch).__name__}")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in batch.items()}


def _parse_batch(raw: bytes, path):
    """(images uint8 (N, 3, 32, 32), labels int64 (N,)) from one batch file's bytes."""
    batch = _unpickle_batch(raw, path)
    if "data" not in batch or "labels" not in batch:
        raise DataFormatError(f"{path}: a CIFAR-10 batch needs keys 'data' and 'labels', "
                              f"found {sorted(map(str, batch))}")
    data = batch["data"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        got = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DataFormatError(f"{path}: 'data' must be uint8 (N, 3072), got {got}")
    labels = _labels(np.asarray(batch["labels"]), 10, path)
    if len(labels) != len(data):
        raise DataFormatError(f"{path}: {len(data)} images but {len(labels)} labels")
    # Each row is 1024 red, then 1024 green, then 1024 blue values, row-major: already CHW.
    return data.reshape(-1, 3, 32, 32), labels


def _classes_from_meta(raw: bytes | None, path) -> tuple:
    if raw is None:
        return CIFAR10_CLASSES
    names = _unpickle_batch(raw, path).get("label_names")
    if names is None or len(names) != 10:
        raise DataFormatError(f"{path}: expected 10 'label_names', got {names!r}")
    return tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names)


def _assemble_cifar(raw_batches: dict, source):
    """Check each batch's md5, then parse and join the five training batches."""
    parsed = {}
    for name, md5 in CIFAR10_BATCH_MD5.items():
        actual = hashlib.md5(raw_batches[name]).hexdigest()
        if actual != md5:
            raise ChecksumError(f"{source}/{name}", "md5", md5, actual)
        parsed[name] = _parse_batch(raw_batches.pop(name), f"{source}/{name}")
    train = [parsed.pop(f"data_batch_{i}") for i in range(1, 6)]
    x_train = np.concatenate([x for x, _ in train])
    y_train = np.concatenate([y for _, y in train])
    x_test, y_test = parsed.pop("test_batch")
    classes = _classes_from_meta(raw_batches.get("batches.meta"), f"{source}/batches.meta")
    return x_train, y_train, x_test, y_test, classes


def _read_cifar_folder(folder: Path):
    raw = {name: (folder / name).read_bytes() for name in CIFAR10_BATCH_MD5}
    if (folder / "batches.meta").is_file():
        raw["batches.meta"] = (folder / "batches.meta").read_bytes()
    return _assemble_cifar(raw, folder)


def _read_cifar_tar(path: Path):
    _check_file_hash(path, "md5", CIFAR10_TAR_MD5)
    wanted = set(CIFAR10_BATCH_MD5) | {"batches.meta"}
    raw = {}
    try:
        with tarfile.open(path, "r:gz") as tar:
            for member in tar:  # one pass over the gzip stream
                base = member.name.rsplit("/", 1)[-1]
                if member.isfile() and base in wanted:
                    raw[base] = tar.extractfile(member).read()
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        raise DataFormatError(f"{path}: not a readable tar.gz archive ({exc})") from None
    absent = sorted(set(CIFAR10_BATCH_MD5) - set(raw))
    if absent:
        raise DataFormatError(f"{path}: the archive lacks {', '.join(absent)}")
    return _assemble_cifar(raw, path)


def _read_cifar_npz(path: Path):
    """The .npz layout: x_* uint8 (N, 32, 32, 3) HWC, y_* (N,), classes (10,)."""
    if path.name == CIFAR10_NPZ:  # a file we know the checksum of
        _check_file_hash(path, "sha256", CIFAR10_NPZ_SHA256)
    try:
        with np.load(path, allow_pickle=False) as f:
            keys = set(f.files)
            need = {"x_train", "y_train", "x_test", "y_test"}
            if not need <= keys:
                raise DataFormatError(f"{path}: an .npz of CIFAR-10 needs keys {sorted(need)}, "
                                      f"found {sorted(keys)}")
            arrays = {k: f[k] for k in need}
            classes = tuple(str(c) for c in f["classes"]) if "classes" in keys else CIFAR10_CLASSES
    except DataFormatError:
        raise
    except Exception as exc:  # zipfile.BadZipFile, ValueError (pickled object arrays), ...
        raise DataFormatError(f"{path}: not a readable .npz file ({type(exc).__name__}: {exc})") from None
    out = []
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if x.dtype != np.uint8 or x.ndim != 4 or x.shape[1:] != (32, 32, 3):
            raise DataFormatError(f"{path}: 'x_{split}' must be uint8 (N, 32, 32, 3), got {x.dtype} {x.shape}")
        y = _labels(y, 10, f"{path} ['y_{split}']")
        if len(y) != len(x):
            raise DataFormatError(f"{path}: {len(x)} images in 'x_{split}' but {len(y)} labels in 'y_{split}'")
        out += [x.transpose(0, 3, 1, 2), y]  # NHWC -> NCHW as a view: no copy yet
    if len(classes) != 10:
        raise DataFormatError(f"{path}: 'classes' must hold 10 names, got {len(classes)}")
    return (*out, classes)


# --------------------------------------------------------------------------
# Split, convert, normalise
# --------------------------------------------------------------------------

def _build(name, classes, x_train, y_train, x_test, y_test, val_size, val_seed, normalize, source) -> Dataset:
    """uint8 NCHW arrays (possibly strided views) -> a normalised float32 Dataset."""
    n = len(x_train)
    if isinstance(val_size, bool) or not isinstance(val_size, (int, np.integer)) or not 0 <= val_size < n:
        raise ValueError(f"val_size must be an integer in [0, {n}) for {name} "
                         f"({n} training examples), got {val_size!r}")
    # The held-out examples: a seeded draw; both index lists sorted to keep the file's order.
    order = np.random.default_rng(val_seed).permutation(n)
    val_idx, train_idx = np.sort(order[:val_size]), np.sort(order[val_size:])

    channels = x_train.shape[1]
    if normalize:
        mean, std = _pixel_statistics(x_train, train_idx)
    else:
        mean, std = np.zeros(channels, np.float32), np.ones(channels, np.float32)
    splits = {}
    for split, x, idx in (("train", x_train, train_idx), ("val", x_train, val_idx),
                          ("test", x_test, np.arange(len(x_test)))):
        splits[split] = _to_float(x, idx, mean, std, normalize)
    return Dataset(name=name, classes=tuple(classes),
                   x_train=splits["train"], y_train=y_train[train_idx],
                   x_val=splits["val"], y_val=y_train[val_idx],
                   x_test=splits["test"], y_test=y_test,
                   mean=mean, std=std, source=source, val_seed=val_seed)


def _pixel_statistics(x_u8: np.ndarray, idx: np.ndarray, chunk: int = 5000):
    """Per-channel mean and std of x/255 over the examples idx, from a histogram.

    A uint8 pixel takes one of 256 values v, so counting them (h[v]) is enough:
    mean = sum_v h[v] v / (255 n),  E[x^2] = sum_v h[v] v^2 / (255^2 n),
    std = sqrt(E[x^2] - mean^2). Exact up to float64 rounding, in small chunks.
    """
    channels = x_u8.shape[1]
    hist = np.zeros((channels, 256), np.int64)
    for start in range(0, len(idx), chunk):
        block = x_u8[idx[start:start + chunk]]
        for c in range(channels):
            hist[c] += np.bincount(block[:, c].ravel(), minlength=256)
    v = np.arange(256, dtype=np.float64) / 255.0
    n = hist.sum(axis=1)
    mean = hist @ v / n
    std = np.sqrt(np.maximum(hist @ (v * v) / n - mean * mean, 0.0))
    std[std == 0] = 1.0  # a constant channel: leave it centred, not divided by 0
    return mean.astype(np.float32), std.astype(np.float32)


def _to_float(x_u8: np.ndarray, idx: np.ndarray, mean, std, normalize: bool, chunk: int = 5000) -> np.ndarray:
    """x_u8[idx] as contiguous float32 NCHW, (x/255 - mean)/std, never in float64.

    Chunked, so only chunk uint8 images are gathered at a time; the float32
    output is the only big allocation.
    """
    out = np.empty((len(idx),) + x_u8.shape[1:], np.float32)
    shape = (1, -1, 1, 1)
    for start in range(0, len(idx), chunk):
        part = out[start:start + chunk]
        part[...] = x_u8[idx[start:start + chunk]]  # uint8 -> float32 cast on assignment
        part /= np.float32(255)
        if normalize:
            part -= mean.reshape(shape)
            part /= std.reshape(shape)
    return out
