"""The `npz(path, validation_split)` data set: a .npz file's arrays, typed
for the model (see specc.data for the contract).

The file is read without pickle: what is not a .npz archive (a text file, a
single .npy, a directory), a damaged archive or member, an object array, or a
value that would not survive the cast to the model's dtype is a DataError
naming the file and the array.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .data import DataError, Dataset, _args, _check_split, _split_and_limit
from .validate import LABELS_MISFIT

_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # a zip member first, or an empty archive
_NPY_MAGIC = b"\x93NUMPY"


def _npz_kind(path: Path) -> None:
    """Refuse, by its first bytes, what is not a .npz archive, before numpy
    guesses at it (numpy would call a text file 'pickled data')."""
    if path.is_dir():
        raise DataError(f"{path} is a directory, not a .npz file")
    if not path.exists():
        raise DataError(f"{path}: no such file" + ("" if path.is_absolute() else f" (in {Path.cwd()})"))
    if not path.is_file():  # a FIFO or a device would block or stream forever
        raise DataError(f"{path} is not a regular file, not a .npz file")
    try:
        with path.open("rb") as f:
            head = f.read(6)
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from None
    if head.startswith(_NPY_MAGIC):
        raise DataError(f"{path} is a single .npy array, not a .npz archive",
                        "save the arrays together: np.savez(path, x_train=..., y_train=..., x_test=..., y_test=...)")
    if not head.startswith(_ZIP_MAGIC):
        raise DataError(f"{path}: not a .npz file (a .npz is a zip archive of arrays, as np.savez writes)")


def _first_line(err: Exception) -> str:
    """An exception's message as one line (numpy's run over several)."""
    lines = str(err).strip().splitlines()
    return lines[0].rstrip(".") if lines else type(err).__name__


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    """Every array of a .npz file; a damaged archive or array, or one holding
    Python objects (which would need pickle), is a DataError naming it."""
    _npz_kind(path)
    try:
        z = np.load(path, allow_pickle=False)
    except Exception as e:  # noqa: BLE001 - zip errors of every kind
        raise DataError(f"{path}: not a readable .npz file ({_first_line(e)})") from None
    found = {}
    with z:
        for key in z.files:
            try:
                found[key] = z[key]
            except ValueError as e:
                # numpy names allow_pickle both for object arrays and for a header over its size limit
                if "Object arrays" in str(e):
                    raise DataError(f"{path}: '{key}' holds Python objects (dtype object), which specc never "
                                    f"loads (no pickle)", "store numbers: np.asarray(values, dtype='float32')"
                                    ) from None
                raise DataError(f"{path}: '{key}' is damaged ({_first_line(e)})") from None
            except MemoryError:
                raise DataError(f"{path}: '{key}' is damaged (its header claims more memory than there is)") from None
            except Exception as e:  # noqa: BLE001 - truncated or corrupt members
                raise DataError(f"{path}: '{key}' is damaged ({_first_line(e)})") from None
            if not isinstance(found[key], np.ndarray):  # a member that is not a .npy file comes back as bytes
                raise DataError(f"{path}: '{key}' is not a .npy array")
    return found


def _fits_dtype(path: Path, key: str, array: np.ndarray, dtype: np.dtype, why: str = "") -> None:
    """Values must survive the cast to the model's dtype: no silent integer
    wrap-around, no finite float turned infinite."""
    if dtype.kind not in "iuf" or array.dtype.kind not in "iuf" or array.size == 0:
        return
    if dtype.kind == "f" and (array.dtype.kind != "f" or array.dtype.itemsize <= dtype.itemsize):
        return  # a narrower float or any integer fits float32's range
    info = np.iinfo(dtype) if dtype.kind in "iu" else np.finfo(dtype)
    lo, hi = float(info.min), float(info.max)
    with np.errstate(invalid="ignore", over="ignore"):  # NaN compares false; bounds may overflow float16
        outside = (array < lo) | (array > hi)
        if dtype.kind == "f":
            outside &= np.isfinite(array)  # NaN and inf stay what they are; validation names them
    if outside.any():
        index = np.unravel_index(int(np.argmax(outside)), array.shape)
        raise DataError(f"{path}: {key}[{', '.join(str(int(i)) for i in index)}] is {array[index]}, "
                        f"which does not fit {dtype}{why}")


def _inputs(path: Path, key: str, x: np.ndarray, shape: tuple[int, ...], xdtype: np.dtype) -> np.ndarray:
    if x.shape[1:] != shape:
        raise DataError(f"{path}: '{key}' has shape {list(x.shape)}, but the model's input needs "
                        f"[N, {', '.join(map(str, shape))}]")
    if x.dtype.kind not in "biuf":
        raise DataError(f"{path}: '{key}' holds {x.dtype} values, not numbers")
    _fits_dtype(path, key, x, xdtype)
    if xdtype.kind in "iu" and x.dtype.kind == "f" and not np.all(np.mod(x, 1) == 0):
        raise DataError(f"{path}: '{key}' holds non-integer {x.dtype} values, but the model's input is {xdtype}")
    return x.astype(xdtype, copy=False)


def _targets(path: Path, key: str, y: np.ndarray, n: int) -> np.ndarray:
    """Class ids as int32, other targets as float32."""
    xkey = "x_" + key.removeprefix("y_")
    if y.ndim == 0:
        raise DataError(f"{path}: '{key}' is a single value, not one label per sample of '{xkey}': {LABELS_MISFIT}")
    if len(y) != n:
        raise DataError(f"{path}: '{key}' has {len(y)} entries, but '{xkey}' has {n}: {LABELS_MISFIT}",
                        "x and y of a split hold the same samples, in the same order")
    if y.dtype.kind in "biuf":
        dtype = np.dtype(np.float32 if y.dtype.kind == "f" else np.int32)
        _fits_dtype(path, key, y, dtype, f": {LABELS_MISFIT}")
        return y.astype(dtype, copy=False)
    raise DataError(f"{path}: '{key}' holds {y.dtype} values, not numbers: the labels do not fit the model",
                    "class ids are integers from 0; other targets are floats")


def _num_classes(*ys: np.ndarray | None) -> int | None:
    ys = [y for y in ys if y is not None and len(y)]
    if ys and all(y.dtype == np.int32 and (y.ndim == 1 or y.shape[1:] == (1,)) for y in ys):  # ids, or a column of ids
        return int(max(int(y.max()) for y in ys)) + 1
    if ys and all(y.shape[1:] == (1,) for y in ys):  # one float target (or id) per sample: no class count
        return None
    if ys and all(y.ndim == 2 for y in ys):
        return int(ys[0].shape[1])
    return None


def load_npz(call, input_shape, input_dtype, limit) -> Dataset:
    """`npz(path, validation_split)`: the arrays of a .npz file, typed for the model."""
    given = dict(call.args)
    if "path" not in given:  # tolerate a positional argument stored under 0 / "0" / "file"
        for key in (0, "0", "file"):
            if key in given:
                given["path"] = given.pop(key)
                break
    a = _args("npz", given, {"path": None, "validation_split": 0.0})
    if not isinstance(a["path"], (str, os.PathLike)):
        raise DataError('npz() needs a file path: npz("file.npz")')
    path = Path(a["path"])
    split = _check_split("npz", a["validation_split"])
    shape = tuple(int(d) for d in input_shape)
    try:
        xdtype = np.dtype(input_dtype)
    except TypeError:
        raise DataError(f"npz(): unknown input dtype {input_dtype!r}") from None
    found = _read_npz(path)

    for key in ("x_train", "y_train", "x_test", "y_test"):
        if key not in found:
            raise DataError(f"{path}: missing array '{key}' (found: {', '.join(sorted(found)) or 'none'}; "
                            f"needs x_train, y_train, x_test, y_test, optionally x_val, y_val)")
    has_val = "x_val" in found or "y_val" in found
    if has_val and not ("x_val" in found and "y_val" in found):
        missing = "y_val" if "x_val" in found else "x_val"
        raise DataError(f"{path}: missing array '{missing}' (x_val and y_val go together)")
    if has_val and split:
        raise DataError(f"{path} has x_val/y_val, so validation_split must not be given")

    def split_of(name: str) -> tuple[np.ndarray, np.ndarray]:
        x = _inputs(path, f"x_{name}", found[f"x_{name}"], shape, xdtype)
        return x, _targets(path, f"y_{name}", found[f"y_{name}"], len(x))

    x_tr, y_tr = split_of("train")
    x_te, y_te = split_of("test")
    x_tr, y_tr, x_va, y_va = _split_and_limit("npz", x_tr, y_tr, split, limit)
    if has_val:
        x_va, y_va = split_of("val")
    return Dataset(name=path.stem, x_train=x_tr, y_train=y_tr, x_val=x_va, y_val=y_va,
                   x_test=x_te, y_test=y_te, num_classes=_num_classes(y_tr, y_va, y_te), source=str(path))
