"""IR layers lowered to Flax linen: one small function per layer kind, found
through the one explicit table `LOWER` (keyed by the catalogue spelling,
merges included).

A lowering function has the signature `lower_x(layer, x, ctx) -> y` (a merge
gets the list of its inputs' arrays). It is called inside
`SpeccModule.__call__` (a `@nn.compact` method), so the Flax submodules it
creates with `name=layer.name` become children of the model and their
variables live under the node's name ("/" in a nested name is kept as is):

    params      {node name: {param: array}}
    batch_stats {node name: {"mean": array, "var": array}}   (BatchNorm only)

`x` is a batch: the IR's channels-first sample shape with a leading batch axis.

Layout (measured, see below): images are computed in NHWC. The IR is
channels-first, so every value of the graph carries its own layout:
`SpeccModule` keeps node name -> (array, layout), sets `ctx.layout` to the
layout of the node's input before lowering it and reads the output's layout
back from it. A node transposes lazily: to NHWC at a conv/pool/BatchNorm that
sees an image, to channels-first (NCHW) where its meaning depends on axis
order (Flatten, Reshape, Dense on a rank-3 sample, softmax over the last
axis). A merge brings its inputs to one layout, NHWC if any image input is
already NHWC, so a residual block stays in NHWC from end to end. The model
output is returned channels-first, so every observable result is.
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

import functools
from dataclasses import dataclass
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from specc import ir
from specc.catalogue import ACTIVATION_LAYERS

from .activations import ACTIVATIONS, LOGIT_ACTIVATIONS
from .batch_norm import BatchNorm
from .noise import DropoutNoise, keep_mask
from .recurrent import GRU, LSTM

Array = jax.Array

CF, NHWC = "NCHW", "NHWC"  # channels-first (the IR's order) and channels-last
# Where each axis of a channels-first image batch (N, C, H, W) lives in NHWC.
NHWC_AXIS = (0, 3, 1, 2)


def to_layout(x: Array, layout: str, wanted: str) -> Array:
    """`x`, held in `layout`, in layout `wanted` (only image batches have two)."""
    if x.ndim != 4 or layout == wanted:
        return x
    return jnp.transpose(x, (0, 2, 3, 1) if wanted == NHWC else (0, 3, 1, 2))


@dataclass
class Ctx:
    """Lowering state for one trace of the model.

    `layout` is the memory layout of the node's input when it is an image
    batch (rank 4; other ranks are always in the IR's order); a lowering
    leaves its output's layout there. `input_layouts` has one per input, for
    the merges.
    """

    train: bool
    precision: Any
    dtype: Any = None  # compute dtype of the convs and matmuls (None: the inputs', f32); BatchNorm stays f32
    layout: str = CF
    input_layouts: tuple[str, ...] = ()
    strip_activation: bool = False  # set for Model.final_activation_index() when logits are wanted
    noise: DropoutNoise | None = None  # what a training forward's Dropout masks are drawn at
    dropout_slots: dict[str, int] | None = None  # Dropout node name -> its order among the model's Dropout layers

    def nhwc(self, x: Array) -> Array:
        if x.ndim == 4:
            x = to_layout(x, self.layout, NHWC)
            self.layout = NHWC
        return x

    def channels_first(self, x: Array) -> Array:
        x = to_layout(x, self.layout, CF)
        self.layout = CF
        return x

    def one_layout(self, xs: list[Array]) -> list[Array]:
        """A merge's inputs in one layout: NHWC when any image input already
        is (the convs around a residual compute there), else channels-first."""
        nhwc = any(x.ndim == 4 and layout == NHWC for x, layout in zip(xs, self.input_layouts))
        self.layout = NHWC if nhwc else CF
        return [to_layout(x, layout, self.layout) for x, layout in zip(xs, self.input_layouts)]

    def compute(self) -> dict[str, Any]:
        """The Flax layers' dtype argument: none at all by default, so f32
        models build exactly as they always have."""
        return {} if self.dtype is None else {"dtype": self.dtype}

    def activate(self, x: Array, name: str, **kw: Any) -> Array:
        if self.strip_activation and name in LOGIT_ACTIVATIONS:
            return x
        if self.dtype is not None and name in LOGIT_ACTIVATIONS:
            x = x.astype(jnp.float32)  # probabilities (and the losses on them) in f32
        if name == "softmax":
            x = self.channels_first(x)
        if name == "leaky_relu" and "alpha" in kw:
            return jax.nn.leaky_relu(x, negative_slope=kw["alpha"])
        return ACTIVATIONS[name](x)


# ---------------------------------------------------------------- lowerings


def lower_dense(layer: ir.Layer, x: Array, ctx: Ctx) -> Array:
    a = layer.attrs
    x = ctx.channels_first(x)  # Dense acts on the last channels-first axis
    y = nn.Dense(a["units"], use_bias=a["bias"], precision=ctx.precision, name=layer.name, **ctx.compute())(x)
    return ctx.activate(y, a["activation"])


def lower_conv2d(layer: ir.Layer, x: Array, ctx: Ctx) -> Array:
    a = layer.attrs
    x = ctx.nhwc(x)
    y = nn.Conv(a["filters"], a["kernel"], strides=a["stride"], padding=a["padding"],
                kernel_dilation=a["dilation"], use_bias=a["bias"], precision=ctx.precision,
                name=layer.name, **ctx.compute())(x)
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
                         name=layer.name, **ctx.compute())(x)
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
    if window == strides and all(lo == hi == 0 for lo, hi in pads):
        return tiled_max_pool(x, window[1:3])
    return lax.reduce_window(x, -jnp.inf, lax.max, window, strides, pads)


# Max pooling over non-overlapping windows (stride == size, no padding: the
# common MaxPool(2)), differentiated by hand. The gradient of
# lax.reduce_window(max) is a select_and_scatter, which XLA:CPU expands into a
# variadic reduce-window carrying an s32 iota per input axis (four arrays of
# the input's size, made anew every step), a zero broadcast and a scatter.
# Here each window is two reshaped axes: the forward is a max over them, the
# tangent (and so the gradient, by transposition) goes to the first position
# in the window (row-major) holding the maximum, the position
# select_and_scatter picks (and PyTorch's max_pool2d): the same gradient
# values, in one elementwise pass. Measured (benchmarks/profile_jax_step.py,
# LeNet train step, batch 128, jaxlib 0.10.2, pinned to one core of the busy
# 2-core machine): 220 -> 147 ms of CPU per step, 1.5x.
#
# Which position holds the maximum is decided on values in memory: the
# pool's input passes an optimization_barrier in the JVP, and the position is
# a running argmax (an index per window, never a comparison with a max taken
# elsewhere), so each window's gradient goes to exactly one position. Before,
# the JVP compared each tile with the max; XLA:CPU fused the producer (say
# BatchNorm + ReLU) into both the forward's max and the backward's compare
# and compiled the two copies differently (an FMA in one, a multiply and an
# add in the other: they disagree in the last bit), so `tile == max` held at
# no position of many windows and their gradient was dropped (issue 17: a
# BatchNorm beta 8e-2 off torch after one SGD step on MNIST; exact with FMA
# off, --xla_cpu_max_isa=SSE4_2). The barrier and the index cost nothing
# measurable: LeNet train step, CPU time 1.00x the compare formulation's
# (reduce_window: 0.66x), 12 interleaved rounds in one process on the busy
# 2-core machine.


def tiled_max_pool(x: Array, size: tuple[int, int]) -> Array:
    """Max over each (kh, kw) tile of an NHWC batch, stride (kh, kw); rows and
    columns past the last whole tile are dropped (VALID), as reduce_window does."""
    kh, kw = size
    n, h, w, c = x.shape
    ho, wo = h // kh, w // kw
    if (ho * kh, wo * kw) != (h, w):
        x = x[:, : ho * kh, : wo * kw, :]
    return _tile_max(x, (kh, kw))


def _tiles(x: Array, size: tuple[int, int]) -> Array:
    kh, kw = size
    n, h, w, c = x.shape
    return x.reshape(n, h // kh, kh, w // kw, kw, c)


def _window_argmax(tiles: Array, size: tuple[int, int]) -> Array:
    """Per window, the row-major index of its first maximum (int32): a
    running comparison, so no value is compared with a max computed elsewhere."""
    kh, kw = size
    best = tiles[:, :, 0, :, 0, :]
    index = jnp.zeros(best.shape, jnp.int32)
    for k in range(1, kh * kw):
        value = tiles[:, :, k // kw, :, k % kw, :]
        better = value > best  # strictly: a tie keeps the earlier position
        best = jnp.where(better, value, best)
        index = jnp.where(better, jnp.int32(k), index)
    return index


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def _tile_max(x: Array, size: tuple[int, int]) -> Array:
    return jnp.max(_tiles(x, size), axis=(2, 4))


@_tile_max.defjvp
def _tile_max_jvp(size: tuple[int, int], primals, tangents):
    (x,), (dx,) = primals, tangents
    kh, kw = size
    tiles = _tiles(lax.optimization_barrier(x), size)  # see above: one copy of the values decides
    index = _window_argmax(tiles, size)
    dtiles = _tiles(dx, size)
    dy = dtiles[:, :, 0, :, 0, :]
    for k in range(1, kh * kw):
        dy = jnp.where(index == k, dtiles[:, :, k // kw, :, k % kw, :], dy)
    return jnp.max(tiles, axis=(2, 4)), dy


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
    # Keras's BatchNorm in flax's variable names, with batch statistics
    # whose accuracy does not depend on XLA's fusion (batch_norm.py says why).
    a = layer.attrs
    axis = -1 if (x.ndim == 4 and ctx.layout == NHWC) else a["axis"] + 1
    if ctx.dtype is not None:
        # Mixed precision: statistics, normalisation and output in float32, as
        # the torch backend does under autocast (its BatchNorm input is cast
        # up); the next conv or matmul takes the output back to the compute dtype.
        x = x.astype(jnp.float32)
    return BatchNorm(axis=axis, momentum=a["momentum"], epsilon=a["epsilon"], train=ctx.train, name=layer.name)(x)


def lower_lstm(layer: ir.Layer, x: Array, ctx: Ctx) -> Array:
    a = layer.attrs
    return LSTM(a["units"], a["return_sequences"], a["activation"], ctx.precision, ctx.dtype, name=layer.name)(x)


def lower_gru(layer: ir.Layer, x: Array, ctx: Ctx) -> Array:
    a = layer.attrs
    return GRU(a["units"], a["return_sequences"], a["activation"], ctx.precision, ctx.dtype, name=layer.name)(x)


def lower_embedding(layer: ir.Layer, x: Array, ctx: Ctx) -> Array:
    a = layer.attrs
    return nn.Embed(a["vocab"], a["dim"], name=layer.name, **ctx.compute())(x)


def lower_flatten(layer: ir.Layer, x: Array, ctx: Ctx) -> Array:
    x = ctx.channels_first(x)  # (C, H, W) order, as PyTorch flattens
    return x.reshape(x.shape[0], -1)


def lower_reshape(layer: ir.Layer, x: Array, ctx: Ctx) -> Array:
    x = ctx.channels_first(x)
    return x.reshape(x.shape[0], *layer.attrs["shape"])


def lower_dropout(layer: ir.Layer, x: Array, ctx: Ctx) -> Array:
    # Inverted dropout, as Keras: kept values are scaled by 1/(1-rate). The
    # mask is specc.noise's (see noise.keep_mask), drawn for the sample's
    # channels-first shape and moved to the layout the value is held in, and
    # applied as torch's SeededDropout applies it, x * mask * (1/keep), so
    # that both backends round alike.
    rate = layer.attrs["rate"]
    if not ctx.train or rate == 0.0:
        return x
    if ctx.noise is None:
        raise ValueError(f"Dropout {layer.name} in a training forward: no DropoutNoise was given")
    nhwc = x.ndim == 4 and ctx.layout == NHWC
    shape = (x.shape[3], x.shape[1], x.shape[2]) if nhwc else x.shape[1:]
    mask = keep_mask(ctx.noise, ctx.dropout_slots[layer.name], x.shape[0], shape, rate)
    if nhwc:
        mask = to_layout(mask, CF, NHWC)
    return x * mask.astype(x.dtype) * (1.0 / (1.0 - rate))


def lower_activation(layer: ir.Layer, x: Array, ctx: Ctx) -> Array:
    return ctx.activate(x, layer.attrs["activation"], **({"alpha": layer.attrs["alpha"]}
                                                         if "alpha" in layer.attrs else {}))


def lower_add(layer: ir.Layer, xs: list[Array], ctx: Ctx) -> Array:
    xs = ctx.one_layout(xs)
    y = xs[0]
    for x in xs[1:]:
        y = y + x
    return y


def lower_concat(layer: ir.Layer, xs: list[Array], ctx: Ctx) -> Array:
    xs = ctx.one_layout(xs)
    axis = layer.attrs["axis"] + 1  # the IR's axis is of a sample
    if xs[0].ndim == 4 and ctx.layout == NHWC:
        axis = NHWC_AXIS[axis]
    return jnp.concatenate(xs, axis=axis)


LOWER: dict[str, Callable[[ir.Layer, Any, Ctx], Array]] = {
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
    "Add": lower_add,
    "Concat": lower_concat,
    **{kind: lower_activation for kind in ACTIVATION_LAYERS},
}


# ---------------------------------------------------------------- the model


def dropout_slots(model: ir.Model) -> dict[str, int]:
    """Each Dropout node's slot: its order among the model's Dropout layers
    (rate 0 included), the order in which the PyTorch backend's
    seeded_dropout numbers its nn.Dropout modules (built in layer order)."""
    names = [layer.name for layer in model.layers if layer.kind == "Dropout"]
    return {name: slot for slot, name in enumerate(names)}


def output_activation(model: ir.Model) -> str | None:
    """"softmax" or "sigmoid" when the model ends with it (the activation
    `logits=True` leaves off; see Model.final_activation), else None."""
    final = model.final_activation
    return final if final in LOGIT_ACTIVATIONS else None


class SpeccModule(nn.Module):
    """A specc IR model as a Flax linen module.

    `__call__(x, train=False, noise=None)` takes a channels-first batch and
    returns a channels-first batch. In training mode apply it with
    `mutable=["batch_stats"]` and, when the model has Dropout, `noise` (a
    DropoutNoise: the seed and global step its masks are drawn at, as the
    PyTorch backend draws them). With `logits=True` the last layer's
    softmax/sigmoid is left off (see `output_activation`).

    `dtype` (mixed precision, e.g. jnp.bfloat16): the compute dtype of the
    convolutions, matmuls (Dense, the LSTM/GRU cells' two products) and
    embeddings, which cast their f32 parameters to it (so gradients come back
    f32 through the casts); a float input is cast on the way in; elementwise
    layers and pooling run in the dtype they are given; BatchNorm normalises,
    keeps its statistics and returns its output in f32, as do the recurrent
    cells' state and gates; softmax/sigmoid run in f32 and the output comes
    back f32, so losses and metrics are f32. This is what torch.autocast to
    bfloat16 does on the PyTorch backend. None (the default) builds the f32
    model exactly as before.
    """

    model: ir.Model
    precision: Any = lax.Precision.HIGHEST
    logits: bool = False
    dtype: Any = None

    @nn.compact
    def __call__(self, x: Array, train: bool = False, noise: DropoutNoise | None = None) -> Array:
        ctx = Ctx(train=train, precision=self.precision, dtype=self.dtype, noise=noise,
                  dropout_slots=dropout_slots(self.model))
        if self.dtype is not None and jnp.issubdtype(x.dtype, jnp.floating):
            x = x.astype(self.dtype)
        final = self.model.final_activation_index() if self.logits else None
        values = {ir.INPUT: (x, CF)}  # node name -> (array, its layout)
        y, layout = x, CF
        for i, layer in enumerate(self.model.layers):
            inputs = [values[name] for name in layer.inputs]
            ctx.layout, ctx.input_layouts = inputs[0][1], tuple(held for _, held in inputs)
            ctx.strip_activation = i == final
            arg = [array for array, _ in inputs] if layer.is_merge else inputs[0][0]
            y = LOWER[layer.kind](layer, arg, ctx)
            layout = ctx.layout if y.ndim == 4 else CF
            values[layer.name] = (y, layout)
        y = to_layout(y, layout, CF)
        return y if self.dtype is None else y.astype(jnp.float32)
