"""Data sets for train blocks: `mnist(...)`, `npz("file.npz")`, `synthetic(...)`.

Only numpy and the standard library are used (no pickle anywhere), so the front
end can load data without importing a framework; every backend receives the same
numpy arrays and the same per-epoch sample order (`batch_order`).

Data calls and their arguments (defaults in brackets):

- ``mnist(validation_split=0.0, range=[0, 1])`` -- the MNIST digits: images
  as floats in [0, 1] (pixel / 255) reshaped to the model's input shape, or in
  ``range=[lo, hi]`` (lo + (hi - lo) * pixel / 255; [-1, 1] for a tanh
  generator), labels as int32 class ids 0..9. Where the four IDX files are looked for, in order:
  `data_dir` (the argument of `load_dataset`), ``$SPECC_DATA``, the copy shipped
  inside the package (``specc/datasets/mnist``), the user cache
  (``$XDG_CACHE_HOME/specc/mnist``, else ``~/.cache/specc/mnist``); for
  `data_dir` and ``$SPECC_DATA`` both the directory itself and its ``mnist/``
  subdirectory are tried. A directory has MNIST when all four files are there,
  each either gzipped (``*.gz``) or decompressed (the same name without
  ``.gz``). Only when none has it are the files downloaded into the user cache
  (set ``SPECC_OFFLINE=1`` to forbid that). The SHA256 of the decompressed
  content of every file is checked.
- ``npz(path, validation_split=0.0)`` -- a ``.npz`` file (`path` relative to the
  current directory) with the arrays ``x_train``, ``y_train``, ``x_test``,
  ``y_test`` and optionally ``x_val``, ``y_val`` (then `validation_split` must
  be 0). Every ``x_*`` must have shape ``(N, *input_shape)``; ``y_*`` must have
  one entry per sample (int class ids, or float targets).
- ``synthetic(samples=1000, classes=10, validation_split=0.0, seed=0,
  test_samples=max(1, samples // 5), vocab=10)`` -- a learnable problem shaped to the
  model's input: standard normal float32 inputs whose label is the argmax of a
  fixed random linear projection (unit-norm columns, so the classes are about
  equally frequent); a linear classifier can reach 100 %. For an integer model
  input (``input [T] int``) the inputs are tokens in ``[0, vocab)`` and the
  label is the argmax of a sum of fixed random per-token class scores. The
  projection, the training inputs and the test inputs come from three
  independent streams of `seed`, so `test_samples` does not change the training
  set.

Validation split (all three): the LAST ``n - split_at`` training samples are held
out, with ``split_at = floor(n * (1 - validation_split))``, before any shuffling.
This is Keras's rule (``train_validation_split`` in
``keras/src/trainers/data_adapters/array_slicing.py``, Keras 3, and in
``tf.keras``' data_adapter, Keras 2): e.g. 60000 samples with 0.2 give 48000 to
train on and 12000 to validate. A split that leaves no training or no validation
sample is an error, as in Keras. `limit=N` keeps only the first N training
samples and is applied before the split; the test set is always kept whole.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import math
import os
import sys
import tempfile
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from .errors import UserError

__all__ = [
    "DataError",
    "Dataset",
    "load_dataset",
    "find_mnist",
    "read_idx",
    "batch_order",
    "num_batches",
    "validation_split_index",
    "MNIST_FILES",
    "MNIST_MIRRORS",
]


class DataError(UserError):
    """A data set cannot be found or read; the message is meant for the user."""


# --------------------------------------------------------------------------- Dataset


@dataclass
class Dataset:
    """The arrays a run trains on; `x_val`/`y_val` are None without a split."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray | None
    y_val: np.ndarray | None
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int | None = None
    source: str | None = None  # where the data came from (directory or file)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    def describe(self) -> str:
        """One line: name, split sizes, sample shape and dtype, classes."""
        parts = [f"train {len(self.x_train)}"]
        if self.x_val is not None:
            parts.append(f"val {len(self.x_val)}")
        parts.append(f"test {len(self.x_test)}")
        text = (f"{self.name}: {', '.join(parts)}; x {list(self.input_shape)} {self.x_train.dtype}, "
                f"y {list(self.y_train.shape[1:])} {self.y_train.dtype}")
        if self.num_classes is not None:
            text += f", {self.num_classes} classes"
        if self.source:
            text += f" (from {self.source})"
        return text


# --------------------------------------------------------------------------- batching


def num_batches(n: int, batch: int) -> int:
    """Batches per epoch over `n` samples; the last partial batch counts (as Keras)."""
    if batch <= 0:
        raise ValueError(f"batch must be positive, got {batch}")
    return -(-int(n) // int(batch))


def batch_order(n: int, batch: int, seed: int, epoch: int) -> np.ndarray:
    """The shuffled sample order (a permutation of range(n), int64) of one epoch.

    Deterministic from (seed, epoch) through numpy's `default_rng`, so every
    backend visits the samples in the same order; batch i is
    ``order[i * batch:(i + 1) * batch]``. `batch` does not change the order (it is
    only checked), so changing the batch size keeps the sequence of samples.
    """
    if batch <= 0:
        raise ValueError(f"batch must be positive, got {batch}")
    rng = np.random.default_rng([int(seed) % 2**64, int(epoch) % 2**64])
    return rng.permutation(int(n)).astype(np.int64)


def validation_split_index(n: int, validation_split: float) -> int:
    """Keras's split point: the first `split_at` samples train, the rest validate."""
    return int(math.floor(n * (1.0 - validation_split)))


# --------------------------------------------------------------------------- IDX files

MNIST_FILES: dict[str, str] = {  # sha256 of the decompressed content
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}

MNIST_MIRRORS: tuple[str, ...] = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)
DOWNLOAD_TIMEOUT_S = 30.0

_IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def _read_bytes(path: Path) -> bytes:
    """A file's content, gunzipped when its name ends in .gz."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from None
    if path.suffix != ".gz":
        return raw
    try:
        return gzip.decompress(raw)
    except EOFError:
        raise DataError(f"{path}: corrupt: truncated gzip file") from None
    except (OSError, zlib.error) as e:
        raise DataError(f"{path}: corrupt: not a valid gzip file ({e})") from None


def _parse_idx(data: bytes, path: Path) -> np.ndarray:
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_TYPES:
        raise DataError(f"{path}: not an IDX file (bad magic number {data[:4].hex() or 'empty'})")
    dtype = np.dtype(_IDX_TYPES[data[2]])
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path}: corrupt: truncated IDX header")
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    expected = header + math.prod(dims) * dtype.itemsize
    if len(data) < expected:
        raise DataError(f"{path}: corrupt: truncated IDX data ({len(data)} bytes, header {list(dims)} "
                        f"needs {expected})")
    if len(data) > expected:
        raise DataError(f"{path}: corrupt: {len(data) - expected} unexpected bytes after the IDX data")
    arr = np.frombuffer(data, dtype=dtype, offset=header).reshape(dims)
    return arr if dtype.itemsize == 1 else arr.astype(dtype.newbyteorder("="))


@functools.lru_cache(maxsize=16)
def _read_idx_cached(resolved: str, mtime_ns: int, size: int, sha256: str | None) -> np.ndarray:
    path = Path(resolved)
    data = _read_bytes(path)
    arr = _parse_idx(data, path)
    if sha256 is not None:
        digest = hashlib.sha256(data).hexdigest()
        if digest != sha256:
            raise DataError(f"{path}: corrupt: checksum mismatch (sha256 of the decompressed content is "
                            f"{digest}, expected {sha256})")
    arr.flags.writeable = False
    return arr


def read_idx(path: str | os.PathLike, sha256: str | None = None) -> np.ndarray:
    """Decode an IDX file (gzipped when named *.gz) into a read-only array.

    With `sha256`, the decompressed content must have that digest. Decoded
    arrays are cached in-process by resolved path (and modification time).
    """
    p = Path(path).resolve()
    try:
        st = p.stat()
    except OSError:
        raise DataError(f"{path}: no such file") from None
    return _read_idx_cached(str(p), st.st_mtime_ns, st.st_size, sha256)


# --------------------------------------------------------------------------- MNIST lookup


def _mnist_file(directory: Path, name: str) -> Path | None:
    """The decompressed file if present, else the gzipped one, else None."""
    for candidate in (directory / name, directory / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _has_mnist(directory: Path) -> bool:
    return all(_mnist_file(directory, name) is not None for name in MNIST_FILES)


def _package_mnist_dir() -> Path | None:
    """The copy shipped as package data (specc/datasets/mnist), if on a file system."""
    try:
        from importlib.resources import files

        root = files("specc.datasets.mnist")
    except Exception:  # noqa: BLE001 - package data missing or not importable
        return None
    path = Path(str(root))
    return path if path.is_dir() else None


def _user_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "specc" / "mnist"


def _download_mnist(dest: Path) -> None:
    """Fetch the four .gz files into `dest`, each verified before it is kept."""
    dest.mkdir(parents=True, exist_ok=True)
    for name, sha in MNIST_FILES.items():
        if _mnist_file(dest, name) is not None:
            continue
        errors = []
        for mirror in MNIST_MIRRORS:
            url = f"{mirror}{name}.gz"
            print(f"specc: downloading {url}", file=sys.stderr)
            try:
                with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response:
                    payload = response.read()
                content = gzip.decompress(payload)
            except Exception as e:  # noqa: BLE001 - network and gzip errors alike
                errors.append(f"{url}: {e}")
                continue
            if hashlib.sha256(content).hexdigest() != sha:
                errors.append(f"{url}: checksum mismatch")
                continue
            fd, tmp = tempfile.mkstemp(dir=dest, prefix=f".{name}.", suffix=".part")
            with os.fdopen(fd, "wb") as f:
                f.write(payload)
            os.replace(tmp, dest / f"{name}.gz")
            break
        else:
            raise DataError("download failed: " + "; ".join(errors))


def _mnist_candidates(data_dir: str | os.PathLike | None) -> list[Path]:
    candidates: list[Path] = []
    for root in (data_dir, os.environ.get("SPECC_DATA") or None):
        if root is not None:
            root = Path(root).expanduser()
            candidates += [root, root / "mnist"]
    package = _package_mnist_dir()
    if package is not None:
        candidates.append(package)
    candidates.append(_user_cache_dir())
    return candidates


def find_mnist(data_dir: str | os.PathLike | None = None) -> Path:
    """The first directory holding the four MNIST files (downloading if none does)."""
    candidates = _mnist_candidates(data_dir)
    for directory in candidates:
        if _has_mnist(directory):
            return directory
    cache = _user_cache_dir()
    looked = ", ".join(str(p) for p in candidates)  # one line: the CLI prints one error line
    hint = "put the four MNIST files (train-images-idx3-ubyte.gz, ...) in one of them, or pass --data-dir"
    if os.environ.get("SPECC_OFFLINE"):
        raise DataError(f"MNIST not found (SPECC_OFFLINE is set, so not downloaded); looked in: {looked}", hint)
    try:
        _download_mnist(cache)
    except (DataError, OSError) as e:
        raise DataError(f"MNIST not found and could not be downloaded ({e}); looked in: {looked}", hint) from None
    if not _has_mnist(cache):
        raise DataError(f"MNIST not found and the download left it incomplete; looked in: {looked}", hint)
    return cache


# --------------------------------------------------------------------------- helpers


def _args(name: str, given: Mapping[Any, Any], allowed: Mapping[str, Any]) -> dict[str, Any]:
    """The call's arguments with defaults filled in; unknown names are an error."""
    unknown = sorted(str(k) for k in given if k not in allowed)
    if unknown:
        raise DataError(f"{name}(): unknown argument(s) {', '.join(unknown)}; "
                        f"expected {', '.join(allowed)}")
    out = dict(allowed)
    out.update(given)
    return out


def _check_split(name: str, split: Any) -> float:
    if isinstance(split, bool) or not isinstance(split, (int, float)) or not 0.0 <= split < 1.0:
        raise DataError(f"{name}(): validation_split must be a number in [0, 1), got {split!r}")
    return float(split)


def _split_and_limit(name: str, x: np.ndarray, y: np.ndarray, split: float, limit: int | None):
    if limit is not None:
        if limit <= 0:
            raise DataError(f"limit must be positive, got {limit}")
        x, y = x[:limit], y[:limit]
    if split == 0.0:
        return x, y, None, None
    n = len(x)
    at = validation_split_index(n, split)
    if at == 0 or at == n:
        raise DataError(f"{name}(): {n} training samples are too few to hold out validation_split={split} "
                        f"(it would leave {at} to train on and {n - at} to validate)")
    return x[:at], y[:at], x[at:], y[at:]


def _float_dtype(name: str, input_dtype: str) -> np.dtype:
    try:
        dtype = np.dtype(input_dtype)
    except TypeError:
        raise DataError(f"{name}(): unknown input dtype {input_dtype!r}") from None
    if not np.issubdtype(dtype, np.floating):
        raise DataError(f"{name}() gives float inputs, but the model's input is {input_dtype}")
    return dtype


# --------------------------------------------------------------------------- loaders


def _pixel_range(value: Any) -> tuple[float, float] | None:
    """mnist(range=[lo, hi]); None for the default [0, 1] (pixel / 255 exactly)."""
    if value is None:
        return None
    ok = isinstance(value, (list, tuple)) and len(value) == 2 and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value)
    if not ok or not value[0] < value[1]:
        raise DataError(f"mnist(): range must be two numbers [low, high] with low < high, got {value!r}")
    return None if tuple(value) == (0, 1) else (float(value[0]), float(value[1]))


def _load_mnist(call, input_shape, input_dtype, data_dir, limit) -> Dataset:
    a = _args("mnist", call.args, {"validation_split": 0.0, "range": None})
    split = _check_split("mnist", a["validation_split"])
    pixels = _pixel_range(a["range"])
    shape = tuple(int(d) for d in input_shape)
    if math.prod(shape) != 28 * 28:
        raise DataError(f"the model's input shape {list(shape)} does not fit MNIST's 28x28 images "
                        f"(use [1, 28, 28], [28, 28] or [784], or any shape of 784 elements)")
    dtype = _float_dtype("mnist", input_dtype)
    directory = find_mnist(data_dir)
    arrays = {name: read_idx(_mnist_file(directory, name), sha) for name, sha in MNIST_FILES.items()}

    def images(raw: np.ndarray) -> np.ndarray:
        x = np.divide(raw, 255, dtype=dtype)
        if pixels is not None:  # lo + (hi - lo) * pixel / 255: [-1, 1] for a tanh generator
            lo, hi = pixels
            x = np.add(np.multiply(x, hi - lo, dtype=dtype), lo, dtype=dtype)
        return x.reshape((len(raw),) + shape)

    x_tr, y_tr = arrays["train-images-idx3-ubyte"], arrays["train-labels-idx1-ubyte"]
    x_tr, y_tr, x_va, y_va = _split_and_limit("mnist", x_tr, y_tr, split, limit)
    return Dataset(
        name="mnist",
        x_train=images(x_tr), y_train=y_tr.astype(np.int32),
        x_val=None if x_va is None else images(x_va), y_val=None if y_va is None else y_va.astype(np.int32),
        x_test=images(arrays["t10k-images-idx3-ubyte"]),
        y_test=arrays["t10k-labels-idx1-ubyte"].astype(np.int32),
        num_classes=10, source=str(directory),
    )


def _load_synthetic(call, input_shape, input_dtype, limit) -> Dataset:
    a = _args("synthetic", call.args, {"samples": 1000, "classes": 10, "validation_split": 0.0, "seed": 0,
                     "test_samples": None, "vocab": 10})
    for key in ("samples", "classes", "seed", "vocab"):
        if isinstance(a[key], bool) or not isinstance(a[key], int):
            raise DataError(f"synthetic(): {key} must be an integer, got {a[key]!r}")
    samples, classes, seed, vocab = a["samples"], a["classes"], a["seed"], a["vocab"]
    test_samples = max(1, samples // 5) if a["test_samples"] is None else a["test_samples"]
    if isinstance(test_samples, bool) or not isinstance(test_samples, int) or test_samples < 1:
        raise DataError(f"synthetic(): test_samples must be a positive integer, got {test_samples!r}")
    if samples < 1:
        raise DataError(f"synthetic(): samples must be positive, got {samples}")
    if classes < 2:
        raise DataError(f"synthetic(): classes must be at least 2, got {classes}")
    if vocab < 1:
        raise DataError(f"synthetic(): vocab must be positive, got {vocab}")
    split = _check_split("synthetic", a["validation_split"])
    shape = tuple(int(d) for d in input_shape)
    dim = math.prod(shape)
    try:
        dtype = np.dtype(input_dtype)
    except TypeError:
        raise DataError(f"synthetic(): unknown input dtype {input_dtype!r}") from None
    r_proj, r_train, r_test = (np.random.default_rng(s) for s in np.random.SeedSequence(seed % 2**64).spawn(3))

    if np.issubdtype(dtype, np.integer):
        scores = r_proj.standard_normal((vocab, classes))

        def make(rng, n):
            x = rng.integers(0, vocab, size=(n, dim))
            y = np.argmax(scores[x].sum(axis=1), axis=1)
            return x.astype(dtype).reshape((n,) + shape), y.astype(np.int32)
    elif np.issubdtype(dtype, np.floating):
        w = r_proj.standard_normal((dim, classes))
        w /= np.linalg.norm(w, axis=0, keepdims=True)

        def make(rng, n):
            x = rng.standard_normal((n, dim)).astype(dtype)
            y = np.argmax(x.astype(np.float64) @ w, axis=1)
            return x.reshape((n,) + shape), y.astype(np.int32)
    else:
        raise DataError(f"synthetic(): unsupported input dtype {input_dtype}")

    try:
        x_tr, y_tr = make(r_train, samples)
        x_te, y_te = make(r_test, test_samples)
    except MemoryError:
        need = (samples + test_samples) * dim * max(dtype.itemsize, 8)
        raise DataError(f"synthetic(): {samples:,} + {test_samples:,} samples of {list(shape)} need about "
                        f"{need / 2**30:,.1f} GiB, more memory than there is", "make samples smaller") from None
    x_tr, y_tr, x_va, y_va = _split_and_limit("synthetic", x_tr, y_tr, split, limit)
    return Dataset(name="synthetic", x_train=x_tr, y_train=y_tr, x_val=x_va, y_val=y_va,
                   x_test=x_te, y_test=y_te, num_classes=classes, source=None)


def load_dataset(call: Any, input_shape: Sequence[int], input_dtype: str = "float32",
                 data_dir: str | os.PathLike | None = None, limit: int | None = None) -> Dataset:
    """Load the data set a train block names, shaped for a model.

    `call` is a `specc.ir.Call` (``.name`` one of mnist, npz, synthetic; ``.args``
    a mapping; the arguments and defaults are in the module docstring).
    `input_shape` is the model's input shape without the batch axis and
    `input_dtype` its dtype. `data_dir` is looked in first for MNIST. `limit`
    keeps only the first N training samples (before the validation split).
    Every failure is a `DataError` with a message for the user.
    """
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit <= 0):
        raise DataError(f"limit must be a positive integer, got {limit!r}")
    name = getattr(call, "name", None)
    if name == "mnist":
        return _load_mnist(call, input_shape, input_dtype, data_dir, limit)
    if name == "npz":
        from .npz import load_npz  # it builds on this module's helpers

        return load_npz(call, input_shape, input_dtype, limit)
    if name == "synthetic":
        return _load_synthetic(call, input_shape, input_dtype, limit)
    raise DataError(f"unknown data set {name!r}: expected mnist(...), npz(\"file.npz\") or synthetic(...)")
