"""IR layers lowered to Flax linen: one small function per layer kind, found
through the one explicit table `LOWER` (keyed by the catalogue spelling).

A lowering function has the signature `lower_x(layer, x, ctx) -> y`. It is
called inside `SpeccModule.__call__` (a `@nn.compact` method), so the Flax
submodules it creates with `name=layer.name` become children of the model and
their variables live under the layer's name:

    params      {layer name: {param: array}}
    batch_stats {layer name: {"mean": array, "var": array}}   (BatchNorm only)

`x` is a batch: the IR's channels-first sample shape with a leading batch axis.

Layout (measured, see below): images are computed in NHWC. The IR is
channels-first, so `Ctx` tracks the layout of the current rank-4 activation and
transposes lazily: to NHWC at the first conv/pool/BatchNorm that sees an image,
back to channels-first (NCHW) where a layer's meaning depends on axis order
(Flatten, Reshape, Dense on a rank-3 sample, softmax over the last axis) and at
the model output. Every observable result is therefore channels-first.
Measured on this project's CPU machine (XLA CPU, jax 0.10.2, LeNet, batch 128,
best of 30): forward 9.7 ms NHWC vs 23.9 ms NCHW; forward+backward 93 ms NHWC vs
139 ms NCHW. Kernels stay in Keras's HWIO layout, which is also what
`lax.conv_general_dilated` wants for NHWC, so no weight is permuted.

Precision: every conv and matmul takes `ctx.precision` (default
`Precision.HIGHEST`). On CPU it is bit-identical to the default precision and
costs the same (measured); on GPUs it keeps f32 parity with PyTorch and numpy
references instead of TF32.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from specc import ir
from specc.catalogue import ACTIVATION_LAYERS

Array = jax.Array

CF, NHWC = "NCHW", "NHWC"  # channels-first (the IR's order) and channels-last


# ---------------------------------------------------------------- activations


def _gelu(x: Array) -> Array:
    return jax.nn.gelu(x, approximate=False)  # the exact erf form (Keras, PyTorch)


ACTIVATIONS: dict[str, Callable[[Array], Array]] = {
    "linear": lambda x: x,
    "relu": jax.nn.relu,
    "sigmoid": jax.nn.sigmoid,
    "tanh": jnp.tanh,
    "softmax": lambda x: jax.nn.softmax(x, axis=-1),  # last axis of the channels-first shape
    "leaky_relu": lambda x: jax.nn.leaky_relu(x, negative_slope=0.01),
    "gelu": _gelu,
    "elu": lambda x: jax.nn.elu(x, alpha=1.0),
    "silu": jax.nn.silu,
}

# Output activations that `logits=True` leaves off (the runner's fused losses).
LOGIT_ACTIVATIONS = ("softmax", "sigmoid")


@dataclass
class Ctx:
    """Lowering state for one trace of the model.

    `layout` is the memory layout of the current activation when it is an image
    batch (rank 4); other ranks are always in the IR's order.
    """

    train: bool
    precision: Any
    layout: str = CF
    strip_activation: bool = False  # set for Model.final_activation_index() when logits are wanted

    def nhwc(self, x: Array) -> Array:
        if x.ndim == 4 and self.layout == CF:
            x = jnp.transpose(x, (0, 2, 3, 1))
            self.layout = NHWC
        return x

    def channels_first(self, x: Array) -> Array:
        if x.ndim == 4 and self.layout == NHWC:
            x = jnp.transpose(x, (0, 3, 1, 2))
        self.layout = CF
        return x

    def activate(self, x: Array, name: str, **kw: Any) -> Array:
        if self.strip_activation and name in LOGIT_ACTIVATIONS:
            return x
        if name == "softmax":
            x = self.channels_first(x)
        if name == "leaky_relu" and "alpha" in kw:
            return jax.nn.leaky_relu(x, negative_slope=kw["alpha"])
        return ACTIVATIONS[name](x)


# ---------------------------------------------------------------- recurrent cells


def _lstm_bias_init(key, shape, dtype=jnp.float32):
    u = shape[0] // 4
    return jnp.zeros(shape, dtype).at[u : 2 * u].set(1.0)


class LSTM(nn.Module):
    """Keras's LSTM on the canonical arrays: kernel [F, 4u], recurrent_kernel
    [u, 4u], bias [4u], gates i, f, c, o; `lax.scan` over time.

    The input projection is done inside the scan step. Hoisting it out (one
    [N*T, F] x [F, 4u] matmul, then scanning over the [T, N, 4u] result) was
    measured slower on XLA CPU (LSTM(128), T=28, batch 128: forward 10 vs 5 ms,
    forward+backward 48 vs 19 ms); per-step is also what Flax's own RNN does.
    """

    units: int
    return_sequences: bool = False
    activation: str = "tanh"
    precision: Any = None

    @nn.compact
    def __call__(self, x: Array) -> Array:  # [N, T, F]
        u, f = self.units, x.shape[-1]
        kernel = self.param("kernel", nn.initializers.glorot_uniform(), (f, 4 * u))
        recurrent = self.param("recurrent_kernel", nn.initializers.orthogonal(), (u, 4 * u))
        bias = self.param("bias", _lstm_bias_init, (4 * u,))
        act = ACTIVATIONS[self.activation]

        def step(carry, x_t):
            h, c = carry
            z = (jnp.dot(x_t, kernel, precision=self.precision)
                 + jnp.dot(h, recurrent, precision=self.precision) + bias)
            i, fg, g, o = jnp.split(z, 4, axis=-1)
            c = jax.nn.sigmoid(fg) * c + jax.nn.sigmoid(i) * act(g)
            h = jax.nn.sigmoid(o) * act(c)
            return (h, c), h

        zeros = jnp.zeros((x.shape[0], u), kernel.dtype)
        (h, _), hs = lax.scan(step, (zeros, zeros), jnp.swapaxes(x, 0, 1))
        return jnp.swapaxes(hs, 0, 1) if self.return_sequences else h


class GRU(nn.Module):
    """Keras's GRU (reset_after=True) on the canonical arrays: kernel [F, 3u],
    recurrent_kernel [u, 3u], bias [2, 3u] (input bias, recurrent bias), gates
    z, r, h; scanned like `LSTM`."""

    units: int
    return_sequences: bool = False
    activation: str = "tanh"
    precision: Any = None

    @nn.compact
    def __call__(self, x: Array) -> Array:  # [N, T, F]
        u, f = self.units, x.shape[-1]
        kernel = self.param("kernel", nn.initializers.glorot_uniform(), (f, 3 * u))
        recurrent = self.param("recurrent_kernel", nn.initializers.orthogonal(), (u, 3 * u))
        bias = self.param("bias", nn.initializers.zeros, (2, 3 * u))
        act = ACTIVATIONS[self.activation]

        def step(h, x_t):
            xz, xr, xh = jnp.split(jnp.dot(x_t, kernel, precision=self.precision) + bias[0], 3, axis=-1)
            hz, hr, hh = jnp.split(jnp.dot(h, recurrent, precision=self.precision) + bias[1], 3, axis=-1)
            z = jax.nn.sigmoid(xz + hz)
            r = jax.nn.sigmoid(xr + hr)
            candidate = act(xh + r * hh)
            h = z * h + (1.0 - z) * candidate
            return h, h

        h, hs = lax.scan(step, jnp.zeros((x.shape[0], u), kernel.dtype), jnp.swapaxes(x, 0, 1))
        return jnp.swapaxes(hs, 0, 1) if self.return_sequences else h


# ---------------------------------------------------------------- lowerings


def lower_dense(layer: ir.Layer, x: Array, ctx: Ctx) -> Array:
    a = layer.attrs
    x = ctx.channels_first(x)  # Dense acts on the last channels-first axis
    y = nn.Dense(a["units"], use_bias=a["bias"], precision=ctx.precision, name=layer.name)(x)
    return ctx.activate(y, a["activation"])


def lower_conv2d(layer: ir.Layer, x: Array, ctx: Ctx) -> Array:
    a = layer.attrs
    x = ctx.nhwc(x)
    y = nn.Conv(a["filters"], a["kernel"], strides=a["stride"], padding=a["padding"],
                kernel_dilation=a["dilation"], use_bias=a["bias"], precision=ctx.precision,
                name=layer.name)(x)
    return ctx.activate(y, a["activation"])


def lower_conv_transpose2d(layer: ir.Layer, x: Array, ctx: Ctx) -> Array:
    # The exact transpose of a convolution: lhs dilation by the stride, the
    # kernel flipped with in/out swapped (transpose_kernel=True, so the kernel
    # is Keras's [kh, kw, out, in]), and pads (k-1-lo, k-1-hi) where (lo, hi) is
    # the IR's crop of the full (H-1)*s + k output. A negative crop becomes a
    # pad beyond k-1: those outputs see only zeros and get just the bias.
    a = layer.attrs
    x = ctx.nhwc(x)
    pads = tuple((k - 1 - lo, k - 1 - hi) for k, (lo, hi) in zip(a["kernel"], a["padding"]))
    y = nn.ConvTranspose(a["filters"], a["kernel"], strides=a["stride"], padding=pads,
                         transpose_kernel=True, use_bias=a["bias"], precision=ctx.precision,
                         name=layer.name)(x)
    return ctx.activate(y, a["activation"])


def _pool_args(layer: ir.Layer):
    a = layer.attrs
    window = (1, *a["size"], 1)
    strides = (1, *a["stride"], 1)
    pads = ((0, 0), *a["padding"], (0, 0))
    return window, strides, pads


def lower_max_pool(layer: ir.Layer, x: Array, ctx: Ctx) -> Array:
    # Padded positions hold -inf, the identity of max, so they never win.
    x = ctx.nhwc(x)
    window, strides, pads = _pool_args(layer)
    return lax.reduce_window(x, -jnp.inf, lax.max, window, strides, pads)


def lower_avg_pool(layer: ir.Layer, x: Array, ctx: Ctx) -> Array:
    # Average over the real values only: the window sum divided by the number
    # of real positions in the window (a sum-pool of a ones mask, a constant).
    x = ctx.nhwc(x)
    window, strides, pads = _pool_args(layer)
    sums = lax.reduce_window(x, 0.0, lax.add, window, strides, pads)
    if all(lo == hi == 0 for lo, hi in pads):
        return sums / (window[1] * window[2])
    ones = jnp.ones((1, x.shape[1], x.shape[2], 1), x.dtype)
    counts = lax.reduce_window(ones, 0.0, lax.add, window, strides, pads)
    return sums / counts


def lower_global_avg_pool(layer: ir.Layer, x: Array, ctx: Ctx) -> Array:
    x = ctx.nhwc(x)
    y = jnp.mean(x, axis=(1, 2))  # [N, C]
    ctx.layout = CF
    return y


def lower_batch_norm(layer: ir.Layer, x: Array, ctx: Ctx) -> Array:
    # Flax's momentum is Keras's convention (moving = m*moving + (1-m)*batch)
    # and it updates the moving variance with the biased batch variance, as
    # Keras does. Its epsilon default (1e-5) differs: always passed. The
    # two-pass variance (use_fast_variance=False) avoids E[x^2]-E[x]^2.
    a = layer.attrs
    axis = -1 if (x.ndim == 4 and ctx.layout == NHWC) else a["axis"] + 1
    return nn.BatchNorm(use_running_average=not ctx.train, axis=axis, momentum=a["momentum"],
                        epsilon=a["epsilon"], use_fast_variance=False, name=layer.name)(x)


def lower_lstm(layer: ir.Layer, x: Array, ctx: Ctx) -> Array:
    a = layer.attrs
    return LSTM(a["units"], a["return_sequences"], a["activation"], ctx.precision, name=layer.name)(x)


def lower_gru(layer: ir.Layer, x: Array, ctx: Ctx) -> Array:
    a = layer.attrs
    return GRU(a["units"], a["return_sequences"], a["activation"], ctx.precision, name=layer.name)(x)


def lower_embedding(layer: ir.Layer, x: Array, ctx: Ctx) -> Array:
    a = layer.attrs
    return nn.Embed(a["vocab"], a["dim"], name=layer.name)(x)


def lower_flatten(layer: ir.Layer, x: Array, ctx: Ctx) -> Array:
    x = ctx.channels_first(x)  # (C, H, W) order, as PyTorch flattens
    return x.reshape(x.shape[0], -1)


def lower_reshape(layer: ir.Layer, x: Array, ctx: Ctx) -> Array:
    x = ctx.channels_first(x)
    return x.reshape(x.shape[0], *layer.attrs["shape"])


def lower_dropout(layer: ir.Layer, x: Array, ctx: Ctx) -> Array:
    # Inverted dropout, as Keras: kept values are scaled by 1/(1-rate).
    return nn.Dropout(layer.attrs["rate"], deterministic=not ctx.train, name=layer.name)(x)


def lower_activation(layer: ir.Layer, x: Array, ctx: Ctx) -> Array:
    return ctx.activate(x, layer.attrs["activation"], **({"alpha": layer.attrs["alpha"]}
                                                         if "alpha" in layer.attrs else {}))


LOWER: dict[str, Callable[[ir.Layer, Array, Ctx], Array]] = {
    "Dense": lower_dense,
    "Conv2D": lower_conv2d,
    "ConvTranspose2D": lower_conv_transpose2d,
    "MaxPool": lower_max_pool,
    "AvgPool": lower_avg_pool,
    "GlobalAvgPool": lower_global_avg_pool,
    "BatchNorm": lower_batch_norm,
    "LSTM": lower_lstm,
    "GRU": lower_gru,
    "Embedding": lower_embedding,
    "Flatten": lower_flatten,
    "Reshape": lower_reshape,
    "Dropout": lower_dropout,
    **{kind: lower_activation for kind in ACTIVATION_LAYERS},
}


# ---------------------------------------------------------------- the model


def output_activation(model: ir.Model) -> str | None:
    """"softmax" or "sigmoid" when the model ends with it (the activation
    `logits=True` leaves off; see Model.final_activation), else None."""
    final = model.final_activation
    return final if final in LOGIT_ACTIVATIONS else None


class SpeccModule(nn.Module):
    """A specc IR model as a Flax linen module.

    `__call__(x, train=False)` takes a channels-first batch and returns a
    channels-first batch. In training mode apply it with
    `mutable=["batch_stats"]` and `rngs={"dropout": key}`. With `logits=True`
    the last layer's softmax/sigmoid is left off (see `output_activation`).
    """

    model: ir.Model
    precision: Any = lax.Precision.HIGHEST
    logits: bool = False

    @nn.compact
    def __call__(self, x: Array, train: bool = False) -> Array:
        ctx = Ctx(train=train, precision=self.precision)
        final = self.model.final_activation_index()
        for i, layer in enumerate(self.model.layers):
            ctx.strip_activation = self.logits and i == final
            x = LOWER[layer.kind](layer, x, ctx)
        return ctx.channels_first(x)
