"""BatchNorm for the jax backend: Keras's semantics in flax's variable names
(params `scale`/`bias`, batch_stats `mean`/`var`, as convert.py maps them),
with batch statistics whose accuracy does not depend on XLA's fusion.

Why not flax's nn.BatchNorm: its batch statistics are one reduce over N*H*W
values, and how accurately XLA:CPU sums those depends on which emitter gets
the reduce. On one device BatchNorm's reduces went to YNNPACK (specc's XLA
default LIBRARY_FUSION_TYPE_REDUCE); in the 2-device partitioned step XLA
fused the concat before a BatchNorm into its reduces (its own loop emitter)
and that BatchNorm's 1/sqrt(var + eps) came out up to 1.5e-6 relative off
float64's (one device: 1e-7). Issue 17's cnn_mnist-sgdm case: the next
conv's output moved 2.8e-7 at a ReLU input whose exact value is -2.7e-7, the
ReLU flipped, and after 3 steps a beta was 4e-3 off between 1 and 2 devices.
Summed in two stages (each sample's H*W values first, then the batch's
per-sample sums; 49 and 16 values there), the sums are accurate whichever
emitter runs them: 1 and 2 devices agree within 4e-6 after 3 steps.

The arithmetic otherwise is flax's (and so Keras's): the centred two-pass
variance (never E[x^2] - E[x]^2), moving = m * moving + (1 - m) * batch with
the biased batch variance, y = (x - mean) * (rsqrt(var + eps) * scale) + bias,
and no moving-statistics update while the module is initialised.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp
from jax import lax


def batch_statistics(x, axis: int):
    """Mean and biased variance of each channel (`axis`) over the other axes:
    per-sample sums over the inner axes first, then over the batch axis. The
    barrier keeps XLA from merging the two reduces back into one (without it
    the steps came out bit for bit as with a single reduce)."""
    axes = tuple(i for i in range(x.ndim) if i != axis)
    outer, inner = axes[:1], axes[1:]
    count = 1
    for a in axes:
        count *= x.shape[a]

    def mean(v):
        if inner:
            v = lax.optimization_barrier(jnp.sum(v, axis=inner, keepdims=True))
        return jnp.sum(v, axis=outer, keepdims=True) / count

    mu = mean(x)
    return mu, mean(jnp.square(x - mu))


class BatchNorm(nn.Module):
    """Batch normalisation over every axis but `axis` (the channels)."""

    axis: int
    momentum: float
    epsilon: float
    train: bool

    @nn.compact
    def __call__(self, x):
        axis = self.axis % x.ndim
        channels = x.shape[axis]
        moving_mean = self.variable("batch_stats", "mean", jnp.zeros, (channels,), jnp.float32)
        moving_var = self.variable("batch_stats", "var", jnp.ones, (channels,), jnp.float32)
        shape = [1] * x.ndim
        shape[axis] = channels
        if self.train:
            mean, var = batch_statistics(x, axis)
            if not self.is_initializing():
                m = self.momentum
                moving_mean.value = m * moving_mean.value + (1 - m) * mean.reshape(channels)
                moving_var.value = m * moving_var.value + (1 - m) * var.reshape(channels)
        else:
            mean, var = moving_mean.value.reshape(shape), moving_var.value.reshape(shape)
        scale = self.param("scale", nn.initializers.ones, (channels,), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, (channels,), jnp.float32)
        mul = lax.rsqrt(var + self.epsilon) * scale.reshape(shape)
        return (x - mean) * mul + bias.reshape(shape)
