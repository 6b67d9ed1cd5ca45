"""specc.noise's counter-based noise in jax.numpy (uint32 arithmetic wraps
mod 2**32, as the formula wants). The step may be a traced scalar, so a
jitted train step draws its noise on the device from its own step counter;
the numbers equal specc.noise's numpy reference (bits exactly)."""

from __future__ import annotations

import jax.numpy as jnp
from jax import lax

from specc.noise import MASK, bits_with, gaussian_with, uniform_with


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
