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


def check_weights(model: Model, weights: Mapping[str, np.ndarray]) -> None:
    """Raise ValueError naming every missing, extra or misshapen key."""
    specs = model.weight_specs()
    problems = [f"missing {k} {list(s.shape)}" for k, s in specs.items() if k not in weights]
    problems += [f"unexpected {k}" for k in weights if k not in specs]
    problems += [
        f"{k} has shape {list(np.shape(weights[k]))}, expected {list(s.shape)}"
        for k, s in specs.items()
        if k in weights and tuple(np.shape(weights[k])) != s.shape
    ]
    if problems:
        raise ValueError(f"weights do not fit model {model.name}: " + "; ".join(problems))


def save_weights(path: str | Path, weights: Mapping[str, np.ndarray], metadata: Mapping[str, str] | None = None) -> None:
    from safetensors.numpy import save_file

    # Floats are stored as float32 (canonical); integer arrays (optimiser step
    # counts in checkpoints) keep their dtype.
    arrays = {k: np.ascontiguousarray(v, dtype=np.float32 if np.issubdtype(np.asarray(v).dtype, np.floating) else None)
              for k, v in weights.items()}
    save_file(arrays, str(path), metadata=dict(metadata or {}))


def load_weights(path: str | Path) -> Weights:
    from safetensors.numpy import load_file

    return dict(load_file(str(path)))
