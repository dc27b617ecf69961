"""MNIST and CIFAR-10: find (or download), split, normalise; and minibatches.

    ds = load_mnist()                  # or load_cifar10()
    ds.x_train.shape                   # (55000, 1, 28, 28) float32, NCHW
    ds.y_train.dtype                   # int64 class ids
    for step, idx in zip(range(1000), minibatches(len(ds.x_train), 60, seed=0)):
        xb, yb = ds.x_train[idx], ds.y_train[idx]

Where the data is looked for, for ``name`` in {mnist, cifar10}. Each place is
a *root*: the dataset is looked for in ``<root>/<name>/`` and then in
``<root>`` itself (so a root may point straight at the dataset's folder).

* An explicit ``data_dir`` argument is the only root: it must be an existing
  folder, and if it does not hold the dataset the loader downloads into
  ``data_dir/<name>/`` (``download=True``) or raises DatasetNotFoundError
  naming it. It never falls back to the places below.
* Without ``data_dir``, the first of these that holds the dataset wins:
  1. the ``MINILOTTERY_DATA`` environment variable,
  2. the project's own ``data/`` folder (MNIST ships there),
  3. the per-user cache ``$XDG_CACHE_HOME/minilottery`` (default ``~/.cache/minilottery``).
  If ``MINILOTTERY_DATA`` is set, it must name an existing folder (else
  DatasetNotFoundError naming it: a typo is not skipped silently); a folder
  that holds only some datasets (say CIFAR-10) is fine, the others are looked
  for further down. If nothing is found and ``download=True``, the canonical
  files are downloaded into ``<$MINILOTTERY_DATA, else the cache>/<name>/``.

Every loaded Dataset records where it came from in ``.provenance``, a
JSON-able dict (the run directory keeps it as data.json)::

    {"dataset": "mnist",
     "source": "/abs/path/data/mnist",        # the folder or file read, resolved
     "found_by": "the project's data/ folder", # or "data_dir argument", "$MINILOTTERY_DATA",
                                              # "per-user cache", "downloaded"
     "files": [{"path": "/abs/path/data/mnist/train-images-idx3-ubyte.gz",
                "algorithm": "md5", "checksum": "6bbc9ace...",
                "of": "the decompressed content"}, ...],   # every file verified
     "examples": {"train": 55000, "val": 5000, "test": 10000}}

``files`` lists each file whose checksum was verified, with that checksum:
MNIST's four IDX files (md5 of the decompressed bytes), CIFAR-10's six batch
files or its tar.gz (md5 of the file) or its .npz (sha256 of the file).

Accepted files in a dataset folder:

* MNIST: the four IDX files, gzip-compressed (``train-images-idx3-ubyte.gz``)
  or raw (``train-images-idx3-ubyte``).
* CIFAR-10, in this order of preference: the extracted ``cifar-10-batches-py/``
  folder (or the folder itself holding ``data_batch_1`` ...), the canonical
  ``cifar-10-python.tar.gz``, or ``cifar10-jpeg.npz``.

Reading them is minilottery.dataformats' job: what each format holds, and the
checksums every file is verified against before it is parsed (errors:
DatasetNotFoundError, ChecksumError, DataFormatError, all DataErrors, which
this module exports too).

Split and normalisation (the paper is silent; these are our choices):
``val_size`` training examples, drawn with ``np.random.default_rng(val_seed)``,
become the validation set (5,000 by default, as in the paper). Pixels are
scaled to [0, 1] and then standardised, x <- (x - mean) / std, with the mean
and standard deviation of the remaining *training* split only (one scalar for
MNIST, one per colour channel for CIFAR-10); validation and test use the same
statistics, stored on the Dataset as ``.mean`` and ``.std``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from . import dataformats
from .dataformats import ChecksumError, DataError, DataFormatError, DatasetNotFoundError

__all__ = [
    "Dataset",
    "load_mnist",
    "load_cifar10",
    "minibatches",
    "pad_crop_flip",
    "data_roots",
    "cache_dir",
    "DataError",
    "DatasetNotFoundError",
    "ChecksumError",
    "DataFormatError",
]

# --------------------------------------------------------------------------
# Where the files are looked for and fetched from. Module-level so that tests
# (and users behind a proxy) can substitute their own mirrors. The file names
# and checksums are dataformats'.
# --------------------------------------------------------------------------

#: Training examples of each dataset (before the validation split). The files are
#: checked against their published checksums, so these counts are fixed.
TRAIN_EXAMPLES = {"mnist": 60_000, "cifar10": 50_000}

#: The repository's top-level data/ folder (MNIST ships in data/mnist/).
PROJECT_DATA_DIR = Path(__file__).resolve().parent.parent / "data"
ENV_VAR = "MINILOTTERY_DATA"

#: Base URLs, tried in order; a file's URL is base + name + ".gz".
MNIST_MIRRORS = (
    "http://yann.lecun.com/exdb/mnist/",
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
)

CIFAR10_URLS = ("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",)


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
    provenance: where the data came from, JSON-able: the source, how it was found,
               every verified file with its checksum (see the module docstring).
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
    provenance: dict = field(default_factory=dict)

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

def load_mnist(data_dir=None, *, val_size=5000, val_seed=0, normalize=True, download=True,
               allocate=np.empty) -> Dataset:
    """MNIST: 60,000 training and 10,000 test digits, 1x28x28.

    Returns a Dataset with (60,000 - val_size) training and val_size validation
    examples (the held-out ones drawn with ``np.random.default_rng(val_seed)``).
    See the module docstring for where the files are looked for.
    ``allocate(shape, dtype)`` makes the three float32 image arrays (default
    ``np.empty``; the command line passes ``SharedArrays.empty`` to load them
    straight into shared memory for its worker processes, see minilottery.shared).
    """
    folder, found_by, looked = _find("mnist", data_dir, _mnist_missing)
    if folder is None:
        folder = _download_or_raise("MNIST", "mnist", data_dir, looked, download, _download_mnist,
                                    needs="the four files " + _mnist_names(dataformats.MNIST_MD5))
        found_by = "downloaded"
    x_train, y_train = dataformats.read_mnist_pair(folder, "train")
    x_test, y_test = dataformats.read_mnist_pair(folder, "t10k")
    files = [_verified(dataformats.mnist_file(folder, stem), "md5", md5, "the decompressed content")
             for stem, md5 in dataformats.MNIST_MD5.items()]
    return _build("mnist", dataformats.MNIST_CLASSES, x_train, y_train, x_test, y_test,
                  val_size, val_seed, normalize, folder, allocate, found_by, files)


def load_cifar10(data_dir=None, *, val_size=5000, val_seed=0, normalize=True, download=True,
                 allocate=np.empty) -> Dataset:
    """CIFAR-10: 50,000 training and 10,000 test colour images, 3x32x32.

    Reads the canonical python batches (extracted folder or tar.gz) or the
    .npz layout (see minilottery.dataformats); (50,000 - val_size) training and
    val_size validation examples. ``allocate``: as for load_mnist.
    """
    source, found_by, looked = _find("cifar10", data_dir, _cifar_missing)
    if source is None:
        folder = _download_or_raise("CIFAR-10", "cifar10", data_dir, looked, download, _download_cifar10,
                                    needs="one of " + _cifar_layouts())
        source, found_by = folder / dataformats.CIFAR10_TAR, "downloaded"
    else:
        source = _cifar_source(source)
    if source.suffix == ".npz":
        arrays = dataformats.read_cifar_npz(source)
        files = [_verified(source, "sha256", dataformats.CIFAR10_NPZ_SHA256)]
    elif source.is_dir():
        arrays = dataformats.read_cifar_folder(source)
        files = [_verified(source / name, "md5", md5) for name, md5 in dataformats.CIFAR10_BATCH_MD5.items()]
    else:
        arrays = dataformats.read_cifar_tar(source)
        files = [_verified(source, "md5", dataformats.CIFAR10_TAR_MD5)]
    x_train, y_train, x_test, y_test, classes = arrays
    return _build("cifar10", classes, x_train, y_train, x_test, y_test,
                  val_size, val_seed, normalize, source, allocate, found_by, files)


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


def pad_crop_flip(images: np.ndarray, rng: np.random.Generator, pad: int = 4) -> np.ndarray:
    """The augmentation of §4's nets (App. I.2, I.3): each image of the batch
    (n, c, h, w) is padded with ``pad`` zeros on every side, cropped back to h x w at
    an offset (dy, dx) drawn uniformly from {0, ..., 2 pad}², and mirrored left to
    right with probability 1/2. The draws come from ``rng`` in a fixed order (all
    offsets, then all flips), so a seed gives the same batch every time. The images
    are normalised before this, so the zeros are the dataset's mean colour.
    Returns a new array; ``images`` is not changed."""
    if images.ndim != 4:
        raise ValueError(f"pad_crop_flip expects images (n, c, h, w), got shape {images.shape}")
    pad = _positive_int(pad, "pad")
    n, _, h, w = images.shape
    offsets = rng.integers(0, 2 * pad + 1, size=(n, 2))
    flips = rng.random(n) < 0.5
    padded = np.pad(images, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    out = np.empty_like(images)
    for i, ((dy, dx), flip) in enumerate(zip(offsets, flips)):
        crop = padded[i, :, dy:dy + h, dx:dx + w]
        out[i] = crop[:, :, ::-1] if flip else crop
    return out


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
    """The roots searched, in order, each with a note saying where it comes from:
    ``data_dir`` alone if given, else $MINILOTTERY_DATA (if set), data/, the cache.

    An explicit root (``data_dir``, or the environment variable) must be an
    existing folder: else DatasetNotFoundError naming it.
    """
    if data_dir is not None:
        return [(_explicit_folder(data_dir, "data_dir"), "data_dir argument")]
    roots = []
    if os.environ.get(ENV_VAR):
        roots.append((_explicit_folder(os.environ[ENV_VAR], f"${ENV_VAR}"), f"${ENV_VAR}"))
    roots.append((PROJECT_DATA_DIR, "the project's data/ folder"))
    roots.append((cache_dir(), "per-user cache"))
    return roots


def _explicit_folder(path, what) -> Path:
    """A folder the user named: it must exist and be a folder (never skipped silently)."""
    folder = Path(path).expanduser()
    if folder.is_dir():
        return folder
    problem = "is a file, not a folder" if folder.exists() else "does not exist"
    raise DatasetNotFoundError(f"{what} {folder} {problem}: name an existing folder that holds "
                               f"the dataset (or an empty one to download it into)")


def _find(name, data_dir, missing):
    """First folder ``<root>/<name>`` or ``<root>`` with nothing missing.

    ``missing(folder)`` returns "" if the folder holds the dataset, else a short
    description of what is missing. Returns (folder or None, the note of its
    root, lines describing every place looked).
    """
    looked = []
    for root, why in data_roots(data_dir):
        if data_dir is None and root == PROJECT_DATA_DIR and not os.environ.get(ENV_VAR):
            looked.append(f"  ${ENV_VAR} is not set")
        for folder in (root / name, root):
            problem = missing(folder)
            if not problem:
                return folder, why, looked
            looked.append(f"  {folder}  ({why}): {problem}")
    return None, None, looked


def _mnist_missing(folder: Path) -> str:
    if not folder.is_dir():
        return "no such folder"
    absent = [stem for stem in dataformats.MNIST_MD5 if dataformats.mnist_file(folder, stem) is None]
    return "missing " + _mnist_names(absent) if absent else ""


def _mnist_names(stems) -> str:
    return ", ".join(stem + "[.gz]" for stem in stems)


def _cifar_candidates(folder: Path) -> list[Path]:
    """The CIFAR-10 sources present in ``folder``, in order of preference."""
    found = []
    for batches in (folder / dataformats.CIFAR10_FOLDER, folder):
        if all((batches / b).is_file() for b in dataformats.CIFAR10_BATCH_MD5):
            found.append(batches)
    for file in (folder / dataformats.CIFAR10_TAR, folder / dataformats.CIFAR10_NPZ):
        if file.is_file():
            found.append(file)
    return found


def _cifar_missing(folder: Path) -> str:
    if not folder.is_dir():
        return "no such folder"
    if _cifar_candidates(folder):
        return ""
    return "none of " + _cifar_layouts()


def _cifar_layouts() -> str:
    """The accepted CIFAR-10 layouts, as named in messages."""
    return f"{dataformats.CIFAR10_FOLDER}/, {dataformats.CIFAR10_TAR}, {dataformats.CIFAR10_NPZ}"


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
    for stem, md5 in dataformats.MNIST_MD5.items():
        if dataformats.mnist_file(folder, stem) is None:
            dest = folder / (stem + ".gz")

            def verify(tmp, dest=dest, md5=md5):
                dataformats.mnist_bytes(tmp, md5, shown_as=dest)

            dl.fetch([base + stem + ".gz" for base in MNIST_MIRRORS], dest, verify)


def _download_cifar10(folder: Path) -> None:
    from minilottery import download as dl
    dest = folder / dataformats.CIFAR10_TAR

    def verify(tmp):
        dataformats.check_file_hash(tmp, "md5", dataformats.CIFAR10_TAR_MD5, shown_as=dest)

    dl.fetch(CIFAR10_URLS, dest, verify)


# --------------------------------------------------------------------------
# Split, convert, normalise
# --------------------------------------------------------------------------

def _verified(path, algorithm, checksum, of="the file") -> dict:
    """One entry of Dataset.provenance["files"]: a file and the checksum it was verified against."""
    return {"path": str(Path(path).resolve()), "algorithm": algorithm, "checksum": checksum, "of": of}


def _build(name, classes, x_train, y_train, x_test, y_test, val_size, val_seed, normalize, source,
           allocate=np.empty, found_by="", files=()) -> Dataset:
    """uint8 NCHW arrays (possibly strided views) -> a normalised float32 Dataset,
    read from ``source`` (found as ``found_by`` says; ``files``: those verified)."""
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
        splits[split] = _to_float(x, idx, mean, std, normalize, allocate)
    provenance = {"dataset": name, "source": str(Path(source).resolve()), "found_by": found_by,
                  "files": list(files),
                  "examples": {"train": len(train_idx), "val": len(val_idx), "test": len(x_test)}}
    return Dataset(name=name, classes=tuple(classes),
                   x_train=splits["train"], y_train=y_train[train_idx],
                   x_val=splits["val"], y_val=y_train[val_idx],
                   x_test=splits["test"], y_test=y_test,
                   mean=mean, std=std, source=str(source), val_seed=val_seed, provenance=provenance)


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


def _to_float(x_u8: np.ndarray, idx: np.ndarray, mean, std, normalize: bool, allocate=np.empty,
              chunk: int = 5000) -> np.ndarray:
    """x_u8[idx] as contiguous float32 NCHW, (x/255 - mean)/std, never in float64.

    Chunked, so only chunk uint8 images are gathered at a time; the float32
    output is the only big allocation.
    """
    out = allocate((len(idx),) + x_u8.shape[1:], np.float32)
    shape = (1, -1, 1, 1)
    for start in range(0, len(idx), chunk):
        part = out[start:start + chunk]
        part[...] = x_u8[idx[start:start + chunk]]  # uint8 -> float32 cast on assignment
        part /= np.float32(255)
        if normalize:
            part -= mean.reshape(shape)
            part /= std.reshape(shape)
    return out
