"""specc.noise's counter-based noise in jax.numpy (uint32 arithmetic wraps
mod 2**32, as the formula wants). The step may be a traced scalar, so a
jitted train step draws its noise on the device from its own step counter;
the numbers equal specc.noise's numpy reference (bits exactly).

`DropoutNoise` is what a training forward's Dropout masks depend on, and
`keep_mask` draws one layer's mask by specc.noise's dropout formula, the one
the PyTorch backend's SeededDropout draws (so both backends train the same
network; the masks of a global-view step do not depend on the device count).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import struct
from jax import lax

from specc.noise import FORWARDS, MASK, bits_with, dropout_stream, gaussian_with, uniform_with


class JaxOps:
    @staticmethod
    def u32(x):
        if isinstance(x, int):
            return jnp.uint32(x & MASK)
        return jnp.asarray(x).astype(jnp.uint32)

    @staticmethod
    def arange(n: int):
        return jnp.arange(n, dtype=jnp.uint32)

    @staticmethod
    def mul(a, b):
        return a * b

    @staticmethod
    def add(a, b):
        return a + b

    @staticmethod
    def xor(a, b):
        return a ^ b

    @staticmethod
    def shr(a, k: int):
        return lax.shift_right_logical(a, jnp.uint32(k))

    @staticmethod
    def expand(a):
        return jnp.asarray(a)[..., None]

    @staticmethod
    def shape(a):
        return jnp.shape(a)

    @staticmethod
    def reshape(a, shape):
        return jnp.reshape(a, shape)

    @staticmethod
    def to_float(a):
        return a.astype(jnp.float32)

    @staticmethod
    def mul_f(a, c: float):
        return a * jnp.float32(c)

    @staticmethod
    def mul_ff(a, b):
        return a * b

    log, sqrt, cos = staticmethod(jnp.log), staticmethod(jnp.sqrt), staticmethod(jnp.cos)


def gaussian(seed: int, stream: int, step, shape):
    """Standard normal float32 noise (see specc.noise); `step` may be traced."""
    return gaussian_with(JaxOps, seed, stream, step, shape)


def uniform(seed: int, stream: int, step, shape):
    return uniform_with(JaxOps, seed, stream, step, shape)


def bits(seed: int, stream: int, step, count: int):
    return bits_with(JaxOps, seed, stream, step, count)


@struct.dataclass
class DropoutNoise:
    """The masks of one training forward: global step `step` (an int or a
    traced int32 scalar, the only leaf, so a jitted step does not recompile
    per step), the train block's `seed`, the plan's `batch` (sample j of the
    batch draws at key step * batch + j; None: the forward's own batch size),
    which `forward` of the network in this step (the GAN's D runs three), and
    the network's `first_slot` (a GAN's D counts its Dropout layers on after
    G's)."""

    step: Any
    seed: int = struct.field(pytree_node=False, default=0)
    batch: int | None = struct.field(pytree_node=False, default=None)
    forward: int = struct.field(pytree_node=False, default=0)
    first_slot: int = struct.field(pytree_node=False, default=0)

    def __post_init__(self):
        if not 0 <= self.forward < FORWARDS:
            raise ValueError(f"forward {self.forward} of a step: at most {FORWARDS}")

    def at(self, forward: int) -> "DropoutNoise":
        """The same step's noise for another forward of the network."""
        return self.replace(forward=forward)


def keep_mask(noise: DropoutNoise, slot: int, rows: int, shape: tuple[int, ...], rate: float) -> jax.Array:
    """Bool [rows, *shape]: which elements Dropout layer `slot` (counted from
    the network's first Dropout layer) keeps for the global batch's rows
    0..rows-1; `shape` is the sample's shape in the IR's (channels-first) order."""
    batch = rows if noise.batch is None else noise.batch
    # uint32 wraps mod 2**32, as the formula's key does on every backend
    keys = jnp.asarray(noise.step).astype(jnp.uint32) * jnp.uint32(batch) + jnp.arange(rows, dtype=jnp.uint32)
    u = uniform(noise.seed, dropout_stream(noise.first_slot + slot, noise.forward), keys, shape)
    return u < 1.0 - rate
