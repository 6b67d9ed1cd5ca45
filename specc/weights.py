"""Canonical weights: made once in numpy with Keras's default initialisers,
stored as safetensors (never pickle).

Each array gets its own generator seeded from (seed, crc32 of its key), so the
same seed gives the same starting weights on every backend, and renaming or
adding one layer does not reshuffle the others.
"""

from __future__ import annotations

import zlib
from math import prod
from pathlib import Path
from typing import Mapping

import numpy as np

from .errors import UserError
from .ir import Model, Weight

Weights = dict[str, np.ndarray]


def _fans(shape: tuple[int, ...]) -> tuple[int, int]:
    # keras.src.initializers.random_initializers.compute_fans
    if len(shape) == 1:
        return shape[0], shape[0]
    if len(shape) == 2:
        return shape[0], shape[1]
    receptive = prod(shape[:-2])
    return receptive * shape[-2], receptive * shape[-1]


def _glorot_uniform(rng: np.random.Generator, shape) -> np.ndarray:
    fan_in, fan_out = _fans(shape)
    limit = np.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-limit, limit, size=shape)


def _orthogonal(rng: np.random.Generator, shape) -> np.ndarray:
    # keras Orthogonal: QR of a normal matrix, signs fixed by diag(R).
    rows, cols = prod(shape[:-1]), shape[-1]
    a = rng.standard_normal((max(rows, cols), min(rows, cols)))
    q, r = np.linalg.qr(a)
    q = q * np.sign(np.diag(r))
    if rows < cols:
        q = q.T
    return q.reshape(shape)


def _lstm_bias(rng: np.random.Generator, shape) -> np.ndarray:
    # unit_forget_bias: zeros, with the forget gate (second quarter, i f c o) at 1.
    b = np.zeros(shape)
    u = shape[0] // 4
    b[u : 2 * u] = 1.0
    return b


INITIALISERS = {
    "glorot_uniform": _glorot_uniform,
    "orthogonal": _orthogonal,
    "zeros": lambda rng, shape: np.zeros(shape),
    "ones": lambda rng, shape: np.ones(shape),
    "lstm_bias": _lstm_bias,
    "uniform_0.05": lambda rng, shape: rng.uniform(-0.05, 0.05, size=shape),  # Keras Embedding default
}


def init_weight(spec: Weight, key: str, seed: int) -> np.ndarray:
    rng = np.random.default_rng([seed, zlib.crc32(key.encode())])
    return np.ascontiguousarray(INITIALISERS[spec.init](rng, spec.shape), dtype=np.float32)


def init_weights(model: Model, seed: int = 0) -> Weights:
    """Canonical initial weights: {"<layer>/<param>": float32 array}, Keras layouts."""
    return {key: init_weight(spec, key, seed) for key, spec in model.weight_specs().items()}


class WeightsError(UserError, ValueError):
    """A weights file that cannot be read or does not fit the model (also a
    ValueError, as backends and their callers have always caught)."""


def _first_problems(model: Model, weights: Mapping[str, np.ndarray]) -> list[str]:
    specs = model.weight_specs()
    missing = [k for k in specs if k not in weights]
    unexpected = [k for k in weights if k not in specs]
    misshapen = [k for k, s in specs.items() if k in weights and tuple(np.shape(weights[k])) != s.shape]
    problems = []
    if missing:
        problems.append(f"missing {missing[0]} {list(specs[missing[0]].shape)}")
    if unexpected:
        problems.append(f"unexpected {unexpected[0]} {list(np.shape(weights[unexpected[0]]))}")
    if misshapen:
        k = misshapen[0]
        problems.append(f"{k} has shape {list(np.shape(weights[k]))}, expected {list(specs[k].shape)}")
    more = len(missing) + len(unexpected) + len(misshapen) - len(problems)
    return problems + ([f"and {more} more"] if more else [])


def check_weights(model: Model, weights: Mapping[str, np.ndarray], source: str | Path | None = None) -> None:
    """Raise WeightsError naming the first missing, the first unexpected and
    the first misshapen key (with both shapes), and how many more there are."""
    problems = _first_problems(model, weights)
    if problems:
        where = f"{source}: " if source else ""
        raise WeightsError(f"{where}weights do not fit model '{model.name}': " + "; ".join(problems),
                           "these are weights of another model; pick the matching spec and --model")


def fit_weights(model: Model, weights: Mapping[str, np.ndarray], source: str | Path) -> Weights:
    """The model's weights from a loaded file, checked (keys, shapes, float and
    finite values) and as canonical float32 arrays."""
    check_weights(model, weights, source)
    out = {}
    for key, value in weights.items():
        if value.dtype.kind != "f" and value.dtype.name != "bfloat16":  # safetensors' BF16 is an ml_dtypes type
            raise WeightsError(f"{source}: {key} holds {value.dtype} values; weights must be floats")
        with np.errstate(over="ignore"):  # a float64 beyond float32 becomes inf, refused below
            value = np.asarray(value, dtype=np.float32)
        if not np.isfinite(value).all():
            raise WeightsError(f"{source}: {key} holds NaN or infinite values: the weights are damaged")
        out[key] = value
    return out


def save_weights(path: str | Path, weights: Mapping[str, np.ndarray], metadata: Mapping[str, str] | None = None) -> None:
    from safetensors.numpy import save_file

    # Floats are stored as float32 (canonical); integer arrays (optimiser step
    # counts in checkpoints) keep their dtype.
    arrays = {k: np.ascontiguousarray(v, dtype=np.float32 if np.issubdtype(np.asarray(v).dtype, np.floating) else None)
              for k, v in weights.items()}
    save_file(arrays, str(path), metadata=dict(metadata or {}))


MAX_HEADER_BYTES = 100_000_000  # safetensors' own limit; a larger claim is damage


def _check_header(path: Path) -> None:
    """Refuse what is not safetensors by its 8-byte header length, before the
    library sees it, so a damaged length never turns into a huge allocation."""
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            head = f.read(9)
    except IsADirectoryError:
        raise WeightsError(f"{path} is a directory, not a weights file") from None
    except FileNotFoundError:
        raise WeightsError(f"{path}: no such file") from None
    except OSError as err:
        raise WeightsError(f"{path}: cannot read ({err.strerror or err})") from None
    if len(head) < 9:
        raise WeightsError(f"{path}: not a safetensors file ({size} bytes, too short to hold a header)")
    claimed = int.from_bytes(head[:8], "little")
    if claimed > MAX_HEADER_BYTES or claimed > size - 8:
        raise WeightsError(f"{path}: not a safetensors file, or a damaged one (its header claims {claimed:,} "
                           f"bytes; the file has {size:,})")
    if head[8:9] != b"{":
        raise WeightsError(f"{path}: not a safetensors file (its header is not JSON)")


def load_weights(path: str | Path) -> Weights:
    """The arrays of a safetensors file; every failure is a WeightsError naming it."""
    from safetensors.numpy import load_file

    path = Path(path)
    _check_header(path)
    try:
        return dict(load_file(str(path)))
    except MemoryError:
        raise WeightsError(f"{path}: too large to load into memory") from None
    except Exception as err:  # noqa: BLE001 - safetensors reports damage as its own error type
        detail = str(err).removeprefix("Error while deserializing header: ")
        raise WeightsError(f"{path}: not a valid safetensors file ({detail})") from None
