"""Counter-based Gaussian noise: the same numbers on every backend.

A GAN's latent vectors, the fixed batch its pictures are drawn from, an
autoencoder's input noise and every Dropout mask must be the same on JAX and
PyTorch for one seed, so that the two backends train the same network. Framework generators
(jax.random, torch.Generator) cannot agree, so specc draws its own: a
stateless hash of (seed, stream, step, counter), written once here against a
tiny array-module adapter (`ops`) and run by numpy (this module, the
reference), jax.numpy (backends/jax_flax/noise.py, uint32, usable inside a
jitted step with a traced `step`) and torch (backends/pytorch/noise.py, int64
with 32-bit masks: wrapping multiplication keeps the low 32 bits right).

API (the same three functions in each of those modules):

    gaussian(seed, stream, step, shape) -> float32 array of `shape`, standard normal
    uniform(seed, stream, step, shape)  -> float32 array of `shape`, in (0, 1)
    bits(seed, stream, step, count)     -> the raw 32-bit words 0..count-1 (the test of exactness)

- `seed`: the train block's seed (a non-negative Python int);
- `stream`: which use this is, so that uses never share numbers (the
  `STREAM_*` constants below; add one for each new use);
- `step`: the global step (an int, a 0-d array, a traced jax scalar, or a 1-D
  array of steps, which prepends that axis to the result: a block of steps in
  one call);
- element j of the C-order flattened `shape` uses counters 2j and 2j+1, so a
  smaller leading size gives a prefix of the same numbers (the last, partial
  batch of an epoch gets the first rows of a full batch's noise).

Across backends the bits are identical; the floats differ only by the last-
place rounding of float32 log/cos/sqrt (about 1e-6 at most).

The formula:
  h(x)      = lowbias32 (Chris Wellons's hash-prospector): x ^= x >> 16;
              x *= 0x7FEB352D; x ^= x >> 15; x *= 0x846CA68B; x ^= x >> 16
              (all mod 2**32)
  key0      = h(h(seed_lo ^ h(seed_hi ^ GOLDEN)) ^ stream)   (Python ints)
  k1        = h(step ^ key0);  k2 = h(k1 ^ GOLDEN)
  word(c)   = h(h(c ^ k1) + k2)
  uniform   = (2 * (word >> 9) + 1) * 2**-24      (exact in float32, in (0, 1))
  angle     = (word >> 8) * 2**-24                 (exact in float32, in [0, 1))
  gaussian  = sqrt(-2 log u) * cos(2 pi a)   with u from counter 2j, a from 2j+1
              (Box-Muller, one normal per pair, all in float32)
"""

from __future__ import annotations

import math

import numpy as np

MASK = 0xFFFFFFFF
M1, M2 = 0x7FEB352D, 0x846CA68B  # lowbias32's multipliers
GOLDEN = 0x9E3779B9  # 2**32 / golden ratio: separates the derived keys
INV_2_24 = 2.0**-24  # exact in float32
TWO_PI = float(np.float32(2 * math.pi))

# Streams: one per use of noise, so two uses never draw the same numbers.
STREAM_LATENT = 1  # a GAN step's latent vectors z
STREAM_SAMPLES = 2  # the fixed latent batch that pictures and scores are drawn from
STREAM_INPUT_NOISE = 3  # an autoencoder's Gaussian input noise
STREAM_DROPOUT = 4  # dropout masks (each layer and forward its own stream: dropout_stream)

# Dropout, the same masks on every backend and device count: in a training
# forward of global step s, Dropout layer `slot` (its order among the
# network's Dropout layers, counted from the network's first slot: a GAN's
# discriminator counts on after its generator's) keeps element i of sample j
# of the global batch when
#     uniform(seed, dropout_stream(slot, forward), s * batch + j, sample_shape)[i] < 1 - rate
# (`batch` is the plan's batch, so the last, partial batch takes keys of the
# same form; the sample shape is the IR's, channels first; the key wraps mod
# 2**32), and scales what it keeps by 1 / (1 - rate). `forward` tells apart
# the forwards of one network in one step (the GAN's D runs three).
FORWARDS = 4  # forwards of one network in one step with their own masks


def dropout_stream(slot: int, forward: int) -> int:
    """specc.noise stream of one dropout layer in one forward of a step:
    STREAM_DROPOUT in the low byte, so never one of the small STREAM_* numbers."""
    return STREAM_DROPOUT + 256 * (1 + slot * FORWARDS + forward)


# ---------------------------------------------------------------- the formula, once


def hash_int(x: int) -> int:
    """lowbias32 on a Python int (the keys that do not depend on the step)."""
    x &= MASK
    x ^= x >> 16
    x = (x * M1) & MASK
    x ^= x >> 15
    x = (x * M2) & MASK
    return x ^ (x >> 16)


def base_key(seed: int, stream: int) -> int:
    """key0 of (seed, stream): a seed of up to 64 bits, a 32-bit stream."""
    if seed < 0 or stream < 0:
        raise ValueError(f"noise seeds and streams are non-negative, got seed {seed}, stream {stream}")
    lo, hi = seed & MASK, (seed >> 32) & MASK
    return hash_int(hash_int(lo ^ hash_int(hi ^ GOLDEN)) ^ (stream & MASK))


def _hash(ops, x):
    x = ops.xor(x, ops.shr(x, 16))
    x = ops.mul(x, ops.u32(M1))
    x = ops.xor(x, ops.shr(x, 15))
    x = ops.mul(x, ops.u32(M2))
    return ops.xor(x, ops.shr(x, 16))


def _keys(ops, seed: int, stream: int, step):
    """(k1, k2) with one trailing axis, so they broadcast against counters."""
    k1 = _hash(ops, ops.xor(ops.u32(step), ops.u32(base_key(seed, stream))))
    k2 = _hash(ops, ops.xor(k1, ops.u32(GOLDEN)))
    return ops.expand(k1), ops.expand(k2)


def _words(ops, counters, k1, k2):
    return _hash(ops, ops.add(_hash(ops, ops.xor(counters, k1)), k2))


def bits_with(ops, seed: int, stream: int, step, count: int):
    """The 32-bit words for counters 0..count-1: shape step's shape + (count,)."""
    k1, k2 = _keys(ops, seed, stream, step)
    return _words(ops, ops.arange(count), k1, k2)


def _pair_words(ops, seed: int, stream: int, step, n: int):
    k1, k2 = _keys(ops, seed, stream, step)
    even = ops.mul(ops.arange(n), ops.u32(2))
    return _words(ops, even, k1, k2), _words(ops, ops.add(even, ops.u32(1)), k1, k2)


def _open_unit(ops, word):
    """(2 * (word >> 9) + 1) * 2**-24: 23 bits, never 0 or 1 (log needs u > 0)."""
    return ops.mul_f(ops.to_float(ops.add(ops.mul(ops.shr(word, 9), ops.u32(2)), ops.u32(1))), INV_2_24)


def _shape_of(ops, step, shape) -> tuple[int, ...]:
    return tuple(ops.shape(step)) + tuple([int(d) for d in shape])


def uniform_with(ops, seed: int, stream: int, step, shape):
    n = math.prod([int(d) for d in shape])  # a list, not a generator: torch.compile traces it
    word = bits_with(ops, seed, stream, step, n)
    return ops.reshape(_open_unit(ops, word), _shape_of(ops, step, shape))


def gaussian_with(ops, seed: int, stream: int, step, shape):
    """Standard normals (float32) by Box-Muller over counter pairs (2j, 2j+1)."""
    n = math.prod([int(d) for d in shape])  # a list, not a generator: torch.compile traces it
    w_radius, w_angle = _pair_words(ops, seed, stream, step, n)
    u = _open_unit(ops, w_radius)
    a = ops.mul_f(ops.to_float(ops.shr(w_angle, 8)), INV_2_24)
    radius = ops.sqrt(ops.mul_f(ops.log(u), -2.0))
    z = ops.mul_ff(radius, ops.cos(ops.mul_f(a, TWO_PI)))
    return ops.reshape(z, _shape_of(ops, step, shape))


# ---------------------------------------------------------------- numpy, the reference


class NumpyOps:
    """uint32 arithmetic wraps mod 2**32; floats are float32 throughout."""

    @staticmethod
    def u32(x):
        return np.asarray(x, dtype=np.uint64).astype(np.uint32) if np.ndim(x) else np.uint32(int(x) & MASK)

    @staticmethod
    def arange(n: int):
        return np.arange(n, dtype=np.uint32)

    @staticmethod
    def mul(a, b):
        with np.errstate(over="ignore"):
            return np.multiply(a, b, dtype=np.uint32)

    @staticmethod
    def add(a, b):
        with np.errstate(over="ignore"):
            return np.add(a, b, dtype=np.uint32)

    @staticmethod
    def xor(a, b):
        return np.bitwise_xor(a, b, dtype=np.uint32)

    @staticmethod
    def shr(a, k: int):
        return np.right_shift(a, np.uint32(k), dtype=np.uint32)

    @staticmethod
    def expand(a):
        return np.asarray(a)[..., None]

    @staticmethod
    def shape(a):
        return np.shape(a)

    @staticmethod
    def reshape(a, shape):
        return np.asarray(a).reshape(shape)

    @staticmethod
    def to_float(a):
        return np.asarray(a).astype(np.float32)

    @staticmethod
    def mul_f(a, c: float):
        return np.multiply(a, np.float32(c), dtype=np.float32)

    @staticmethod
    def mul_ff(a, b):
        return np.multiply(a, b, dtype=np.float32)

    log, sqrt, cos = staticmethod(np.log), staticmethod(np.sqrt), staticmethod(np.cos)


def gaussian(seed: int, stream: int, step, shape) -> np.ndarray:
    """Standard normal float32 noise of `shape` for (seed, stream, step); see the module docstring."""
    return gaussian_with(NumpyOps, seed, stream, _steps(step), shape)


def uniform(seed: int, stream: int, step, shape) -> np.ndarray:
    """Uniform float32 noise in (0, 1) of `shape` for (seed, stream, step)."""
    return uniform_with(NumpyOps, seed, stream, _steps(step), shape)


def bits(seed: int, stream: int, step, count: int) -> np.ndarray:
    """The raw uint32 words of counters 0..count-1."""
    return bits_with(NumpyOps, seed, stream, _steps(step), count)


def dropout_keep(seed: int, slot: int, forward: int, step: int, batch: int, rows, shape, rate: float) -> np.ndarray:
    """The reference keep mask (bool, [len(rows), *shape]) of Dropout layer
    `slot` for global `rows` of the batch of global step `step` (see above)."""
    keys = (int(step) * int(batch) + np.asarray(rows, dtype=np.int64)) & MASK
    return uniform(seed, dropout_stream(slot, forward), keys, shape) < np.float32(1.0 - rate)


def _steps(step):
    """An int, or an integer array of steps (each below 2**32)."""
    if np.ndim(step):
        return np.asarray(step, dtype=np.int64)
    return int(step)
