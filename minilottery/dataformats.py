"""Reading and verifying the dataset files: MNIST's IDX files, CIFAR-10's
python batches (an extracted folder or the tar.gz) and the CIFAR-10 .npz layout.

Every file is checked against its published checksum before it is parsed, so a
corrupt or truncated file fails loudly (ChecksumError) instead of training on
garbage; a file that hashes right but is not what its name promises raises
DataFormatError, naming the file, what was expected and what was found. The
checksum tables are module-level so that tests can substitute those of small
fake files. Every reader returns uint8 NCHW images and int64 labels in [0, 10);
turning them into a float32 Dataset (split, normalisation) is minilottery.data's job.

MNIST: four IDX files, gzip-compressed (``train-images-idx3-ubyte.gz``) or raw
(``train-images-idx3-ubyte``). An IDX file is a header and then the data:

    bytes 0-3      magic: 0, 0, 0x08 (the data are uint8), ndim (3 images, 1 labels)
    ndim x 4 bytes the size of each dimension, big-endian uint32, e.g. 60000 28 28
    the rest       prod(sizes) uint8 values, row-major

The checksums are md5 of the *decompressed* bytes, not of the .gz files: the
same content compressed by another tool, at another level or with another
timestamp in the gzip header gives other .gz bytes, so hashing the content
lets a re-compressed (or uncompressed) copy pass while any change to the
images or labels still fails.

CIFAR-10 python batches: ``data_batch_1`` ... ``data_batch_5``, ``test_batch``
and, optionally, ``batches.meta``, in ``cifar-10-batches-py/`` or in the
canonical ``cifar-10-python.tar.gz`` (read in place in one pass, never
extracted). Each batch is a Python 2 pickle of a dict with bytes keys:

    b"data"      uint8 (10000, 3072): each row 1024 red, then 1024 green, then 1024
                 blue values of a 32x32 image, row-major (so already CHW)
    b"labels"    10000 class ids in [0, 10)
    b"batch_label", b"filenames"   (not used)

``batches.meta`` holds b"label_names", the 10 class names (CIFAR10_CLASSES
when it is absent). The checksums are md5 of each batch file and of the
tar.gz as a whole. A pickle can run arbitrary code when loaded, so the
batches are read with an unpickler that builds only plain data and NumPy arrays.

CIFAR-10 .npz (``cifar10-jpeg.npz``, checked with sha256): keys x_train uint8
(N, 32, 32, 3) (HWC, transposed to NCHW on reading), y_train (N,) integer
labels, x_test, y_test, and optionally classes (10,) of str. It is read with
allow_pickle=False: no object arrays.
"""

from __future__ import annotations

import codecs
import gzip
import hashlib
import importlib
import io
import pickle
import tarfile
import zlib
from pathlib import Path

import numpy as np

__all__ = [
    "DataError",
    "DatasetNotFoundError",
    "ChecksumError",
    "DataFormatError",
    "MNIST_MD5",
    "MNIST_CLASSES",
    "CIFAR10_TAR",
    "CIFAR10_TAR_MD5",
    "CIFAR10_FOLDER",
    "CIFAR10_BATCH_MD5",
    "CIFAR10_NPZ",
    "CIFAR10_NPZ_SHA256",
    "CIFAR10_CLASSES",
    "check_file_hash",
    "mnist_file",
    "mnist_bytes",
    "read_mnist_pair",
    "read_cifar_folder",
    "read_cifar_tar",
    "read_cifar_npz",
]

# --------------------------------------------------------------------------
# File names, what they must hash to, class names. Module-level so that tests
# can substitute the checksums of their own small files.
# --------------------------------------------------------------------------

#: IDX file name -> md5 of its *decompressed* bytes.
MNIST_MD5 = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}
MNIST_CLASSES = tuple(str(d) for d in range(10))

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
# Checksums
# --------------------------------------------------------------------------

def check_file_hash(path: Path, algorithm: str, expected: str, shown_as=None) -> None:
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

def mnist_file(folder: Path, stem: str) -> Path | None:
    """The IDX file ``stem`` in ``folder``: ``stem.gz`` if present, else ``stem``, else None."""
    for candidate in (folder / (stem + ".gz"), folder / stem):
        if candidate.is_file():
            return candidate
    return None


def mnist_bytes(path: Path, expected_md5: str, shown_as=None) -> bytearray:
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


def read_mnist_pair(folder: Path, prefix: str):
    """(images uint8 (N, 1, 28, 28), labels int64 (N,)) for prefix 'train' or 't10k'."""
    stems = f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"
    paths = [mnist_file(folder, stem) for stem in stems]
    images = _parse_idx(mnist_bytes(paths[0], MNIST_MD5[stems[0]]), paths[0], 3)
    labels = _parse_idx(mnist_bytes(paths[1], MNIST_MD5[stems[1]]), paths[1], 1)
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


def read_cifar_folder(folder: Path):
    """(x_train, y_train, x_test, y_test, classes) from a folder of python batches."""
    raw = {name: (folder / name).read_bytes() for name in CIFAR10_BATCH_MD5}
    if (folder / "batches.meta").is_file():
        raw["batches.meta"] = (folder / "batches.meta").read_bytes()
    return _assemble_cifar(raw, folder)


def read_cifar_tar(path: Path):
    """The same from the canonical tar.gz, read in one pass without extracting it."""
    check_file_hash(path, "md5", CIFAR10_TAR_MD5)
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


def read_cifar_npz(path: Path):
    """The .npz layout: x_* uint8 (N, 32, 32, 3) HWC, y_* (N,), classes (10,)."""
    if path.name == CIFAR10_NPZ:  # a file we know the checksum of
        check_file_hash(path, "sha256", CIFAR10_NPZ_SHA256)
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
