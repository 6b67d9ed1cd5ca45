"""The layer catalogue: one `LayerDef` per kind, the single source of truth for
argument signatures, shape inference, canonical weights and multiply-adds.

Adding a layer kind means one entry here and one lowering function per backend.
A `build_*` function receives arguments already converted to their declared
types and the input shape (channels-first, no batch axis); it returns the
resolved attributes, the output shape and the canonical weights, or raises
`LayerError` with a message and a hint.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import prod
from typing import Any, Callable

from . import shapes
from .ir import Layer, Shape, Weight

ACTIVATIONS = ("linear", "relu", "sigmoid", "tanh", "softmax", "leaky_relu", "gelu", "elu", "silu")

# Activation layers and the activation each applies (LeakyReLU takes its alpha).
ACTIVATION_LAYERS = {
    "ReLU": "relu",
    "Sigmoid": "sigmoid",
    "Tanh": "tanh",
    "Softmax": "softmax",
    "GELU": "gelu",
    "ELU": "elu",
    "SiLU": "silu",
    "LeakyReLU": "leaky_relu",
}

LEAKY_RELU_SLOPE = 0.01  # `activation=leaky_relu`, and LeakyReLU's default alpha

# The largest size specc checks a model into: any dimension or argument that
# is a size (units, filters, kernel, stride, padding, vocab, Reshape's
# dimensions, input dimensions), the elements of any one per-sample tensor,
# of any one weight array, and the model's total parameter count. Both
# backends hold shapes as int64, but that is not the real bound: torch's and
# XLA's kernels (and cuDNN's) index many tensors with 32-bit integers, and
# 2**31 float32 elements are 8 GiB for one sample's activation or one weight
# array; 2**31 parameters trained with Adam need 32 GiB of weights, gradients
# and slots before a single activation. A number beyond this is a typo or a
# runaway expression, reported at its span before any backend is asked to
# allocate it (which would end in "Maximum allowed dimension exceeded").
MAX_SIZE = 2**31 - 1
MAX_SIZE_TEXT = "2,147,483,647 (2**31 - 1)"
FLOAT32_MAX = 3.4028234663852886e38  # layer arguments that are numbers are computed in float32 on every backend


class LayerError(Exception):
    """A problem with one layer; `arg` names the argument to point at, if any."""

    def __init__(self, message: str, hint: str | None = None, arg: str | None = None):
        super().__init__(message)
        self.message, self.hint, self.arg = message, hint, arg


@dataclass(frozen=True)
class Symbol:
    """A bare identifier used as a value: `padding=same`, `activation=relu`."""

    name: str

    def __str__(self) -> str:
        return self.name


REQUIRED = object()


@dataclass(frozen=True)
class Arg:
    name: str
    type: str  # a key of CONVERTERS
    default: Any = REQUIRED
    positional: bool = False

    @property
    def required(self) -> bool:
        return self.default is REQUIRED


def _describe(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_describe(v) for v in value) + "]"
    return str(value)


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            raise LayerError(f"{name} must be an integer, got {_describe(value)}",
                             f"write {int(value)} (use // for integer division)", name)
        hint = f"write a whole number, such as {max(1, int(value))}" if isinstance(value, float) else None
        raise LayerError(f"{name} must be a positive integer, got {_describe(value)}", hint, name)
    if value <= 0:
        raise LayerError(f"{name} must be a positive integer, got {value}", "counts and sizes start at 1", name)
    _at_most_max(value, name)
    return value


def _at_most_max(value: int, name: str) -> None:
    if value > MAX_SIZE:
        raise LayerError(f"{name} must be at most {MAX_SIZE_TEXT}, got {value}", SIZE_HINT, name)


SIZE_HINT = "no backend holds a size this large; check the number (and the expression that makes it)"


def _pair(value: Any, name: str) -> tuple[int, int]:
    if isinstance(value, (list, tuple)):
        if len(value) != 2:
            raise LayerError(f"{name} must be an integer or [h, w], got {_describe(value)}", None, name)
        return (_positive_int(value[0], name), _positive_int(value[1], name))
    v = _positive_int(value, name)
    return (v, v)


def _nonneg_pair(value: Any, name: str) -> tuple[int, int]:
    items = value if isinstance(value, (list, tuple)) else [value, value]
    if len(items) != 2 or any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in items):
        raise LayerError(f"{name} must be valid, same, a non-negative integer or [h, w], got {_describe(value)}",
                         None, name)
    for v in items:
        _at_most_max(v, name)
    return (items[0], items[1])


def _float(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise LayerError(f"{name} must be a number, got {_describe(value)}", None, name)
    if abs(value) > FLOAT32_MAX:
        raise LayerError(f"{name} must be within float32's range (about -3.4e38 to 3.4e38), got {_describe(value)}",
                         "every backend computes it in float32, where this number is infinite", name)
    return float(value)


def _rate(value: Any, name: str) -> float:
    v = _float(value, name)
    if not 0.0 <= v < 1.0:
        raise LayerError(f"{name} must be in [0, 1), got {_describe(value)}", "a dropout rate is a fraction, such as 0.5", name)
    return v


def _bool(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise LayerError(f"{name} must be true or false, got {_describe(value)}", None, name)
    return value


def _activation(value: Any, name: str) -> str:
    from .diagnostics import suggestion

    if not isinstance(value, Symbol) or value.name not in ACTIVATIONS:
        shown = value.name if isinstance(value, Symbol) else _describe(value)
        hint = suggestion(shown, ACTIVATIONS, "activations") if isinstance(value, Symbol) else None
        raise LayerError(f"unknown activation '{shown}'", hint or "activations: " + ", ".join(ACTIVATIONS), name)
    return value.name


def _padding(value: Any, name: str) -> Any:
    if isinstance(value, Symbol):
        if value.name in ("valid", "same"):
            return value.name
        from .diagnostics import suggestion

        raise LayerError(f"unknown padding '{value.name}'",
                         suggestion(value.name, ("valid", "same")) or "padding is valid, same, an integer or [h, w]",
                         name)
    return _nonneg_pair(value, name)


def _transpose_padding(value: Any, name: str) -> str:
    if isinstance(value, Symbol) and value.name in ("valid", "same"):
        return value.name
    raise LayerError(f"ConvTranspose2D padding must be valid or same, got {_describe(value) if not isinstance(value, Symbol) else value.name}",
                     "explicit padding is only for Conv2D and pools", name)


def _dims(value: Any, name: str) -> tuple[int, ...]:
    if not isinstance(value, (list, tuple)) or not value:
        raise LayerError(f"{name} must be a list of dimensions such as [128, 7, 7], got {_describe(value)}", None, name)
    for v in value:
        if isinstance(v, bool) or not isinstance(v, int) or (v <= 0 and v != -1):
            raise LayerError(f"{name} dimensions must be positive integers or -1, got {_describe(value)}", None, name)
    if list(value).count(-1) > 1:
        raise LayerError(f"{name} may contain -1 only once, got {_describe(value)}", None, name)
    for v in value:
        _at_most_max(v, name)
    return tuple(value)


def _axis(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise LayerError(f"{name} must be an integer, got {_describe(value)}", "axes count from 0, channels first; "
                         "-1 is the last", name)
    return value


CONVERTERS: dict[str, Callable[[Any, str], Any]] = {
    "int": _positive_int,
    "axis": _axis,
    "pair": _pair,
    "float": _float,
    "rate": _rate,
    "bool": _bool,
    "activation": _activation,
    "padding": _padding,
    "transpose_padding": _transpose_padding,
    "dims": _dims,
}

TYPE_WORDS = {
    "int": "a positive integer",
    "axis": "an integer axis",
    "pair": "an integer or [h, w]",
    "float": "a number",
    "rate": "a number in [0, 1)",
    "bool": "true or false",
    "activation": "an activation name",
    "padding": "valid, same, an integer or [h, w]",
    "transpose_padding": "valid or same",
    "dims": "a list of dimensions",
}


# ---------------------------------------------------------------- helpers


def _shape_str(shape: Shape) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def _need_image(kind: str, in_shape: Shape, source: str) -> tuple[int, int, int]:
    if len(in_shape) != 3:
        hint = ("put Reshape([...]) before it, or move it above Flatten()"
                if len(in_shape) == 1 else "images are [C, H, W]; use Reshape([C, H, W]) before it")
        raise LayerError(f"{kind} needs an input of shape [C, H, W], but {source} {_shape_str(in_shape)}", hint)
    return in_shape  # type: ignore[return-value]


def _spatial(kind: str, in_shape: Shape, kernel, stride, dilation, padding) -> tuple[Shape, tuple]:
    """Output spatial size and explicit pads for a conv or pool."""
    _, h, w = in_shape
    if padding == "same":
        pads = (shapes.same_pads(h, kernel[0], stride[0], dilation[0]),
                shapes.same_pads(w, kernel[1], stride[1], dilation[1]))
    elif padding == "valid":
        pads = ((0, 0), (0, 0))
    else:
        pads = ((padding[0], padding[0]), (padding[1], padding[1]))
    out = (shapes.conv_output(h, kernel[0], stride[0], dilation[0], pads[0]),
           shapes.conv_output(w, kernel[1], stride[1], dilation[1], pads[1]))
    if min(out) <= 0:
        eff = (shapes.effective_kernel(kernel[0], dilation[0]), shapes.effective_kernel(kernel[1], dilation[1]))
        raise LayerError(
            f"{kind} kernel {eff[0]}x{eff[1]} does not fit its padded input "
            f"{h + sum(pads[0])}x{w + sum(pads[1])}",
            "use padding=same, a smaller kernel, or remove a pooling layer above it",
        )
    return out, pads


def _check_pads_smaller_than_kernel(kind: str, pads, kernel) -> None:
    for (lo, hi), k in zip(pads, kernel):
        if max(lo, hi) >= k:
            raise LayerError(f"{kind} padding {max(lo, hi)} must be smaller than the pool size {k}",
                             "a window made only of padding has no value", "padding")


def size_problem(kind: str, out: Shape, weights) -> LayerError | None:
    """A built layer whose output (per sample) or one of whose weight arrays
    holds more than MAX_SIZE values (see MAX_SIZE), or None. Constant work:
    a few products, whatever the sizes."""
    values = prod(out)
    if values > MAX_SIZE:
        return LayerError(f"{kind} would output {_shape_str(out)} per sample: {values:,} values, more than specc's "
                          f"limit of {MAX_SIZE_TEXT}", "no backend holds a tensor this large; check the sizes that "
                          "make it (units, filters, padding, stride, or the layers above)")
    for w in weights:
        if w.size > MAX_SIZE:
            return LayerError(f"{kind}'s {w.name} {_shape_str(w.shape)} would hold {w.size:,} values, more than "
                              f"specc's limit of {MAX_SIZE_TEXT}", "no backend holds a weight array this large; "
                              "use fewer units or filters, or shrink its input (e.g. pool before Flatten)")
    return None


# ---------------------------------------------------------------- builders


def build_dense(a: dict, in_shape: Shape, source: str):
    if len(in_shape) < 1:
        raise LayerError("Dense needs an input with at least one axis")
    fan_in, units = in_shape[-1], a["units"]
    weights = [Weight("kernel", (fan_in, units), True, "glorot_uniform")]
    if a["bias"]:
        weights.append(Weight("bias", (units,), True, "zeros"))
    attrs = {"units": units, "activation": a["activation"], "bias": a["bias"]}
    return attrs, in_shape[:-1] + (units,), weights


def build_conv2d(a: dict, in_shape: Shape, source: str):
    c, _, _ = _need_image("Conv2D", in_shape, source)
    out, pads = _spatial("Conv2D", in_shape, a["kernel"], a["stride"], a["dilation"], a["padding"])
    f = a["filters"]
    weights = [Weight("kernel", (*a["kernel"], c, f), True, "glorot_uniform")]
    if a["bias"]:
        weights.append(Weight("bias", (f,), True, "zeros"))
    attrs = {"filters": f, "kernel": a["kernel"], "stride": a["stride"], "dilation": a["dilation"],
             "padding": pads, "activation": a["activation"], "bias": a["bias"]}
    return attrs, (f, *out), weights


def build_conv_transpose2d(a: dict, in_shape: Shape, source: str):
    c, h, w = _need_image("ConvTranspose2D", in_shape, source)
    k, s = a["kernel"], a["stride"]
    crop = (shapes.transpose_crop(h, k[0], s[0], a["padding"]), shapes.transpose_crop(w, k[1], s[1], a["padding"]))
    out = (shapes.transpose_output(h, k[0], s[0], crop[0]), shapes.transpose_output(w, k[1], s[1], crop[1]))
    f = a["filters"]
    # Keras's Conv2DTranspose layout: [kh, kw, out, in].
    weights = [Weight("kernel", (*k, f, c), True, "glorot_uniform")]
    if a["bias"]:
        weights.append(Weight("bias", (f,), True, "zeros"))
    # `padding` is the crop (low, high) applied to the full transposed output of
    # size (H-1)*stride + k: PyTorch's `padding` generalised to two sides.
    attrs = {"filters": f, "kernel": k, "stride": s, "padding": crop,
             "activation": a["activation"], "bias": a["bias"]}
    return attrs, (f, *out), weights


def _build_pool(kind: str):
    def build(a: dict, in_shape: Shape, source: str):
        c, _, _ = _need_image(kind, in_shape, source)
        size = a["size"]
        stride = a["stride"] if a["stride"] is not None else size
        out, pads = _spatial(kind, in_shape, size, stride, (1, 1), a["padding"])
        if a["padding"] not in ("same", "valid"):
            _check_pads_smaller_than_kernel(kind, pads, size)
        return {"size": size, "stride": stride, "padding": pads}, (c, *out), []

    return build


def build_global_avg_pool(a: dict, in_shape: Shape, source: str):
    c, _, _ = _need_image("GlobalAvgPool", in_shape, source)
    return {}, (c,), []


def build_batch_norm(a: dict, in_shape: Shape, source: str):
    # Channels-first images and vectors normalise axis 0 of a sample; sequences
    # [T, F] normalise their features, the last axis.
    axis = len(in_shape) - 1 if len(in_shape) == 2 else 0
    if not 0.0 <= a["momentum"] <= 1.0:
        raise LayerError(f"momentum must be in [0, 1], got {a['momentum']}",
                         "specc uses the Keras convention: the fraction of the moving average kept, e.g. 0.99",
                         "momentum")
    if a["epsilon"] <= 0:
        raise LayerError(f"epsilon must be positive, got {a['epsilon']}", None, "epsilon")
    c = in_shape[axis]
    weights = [
        Weight("gamma", (c,), True, "ones"),
        Weight("beta", (c,), True, "zeros"),
        Weight("moving_mean", (c,), False, "zeros"),
        Weight("moving_variance", (c,), False, "ones"),
    ]
    return {"momentum": a["momentum"], "epsilon": a["epsilon"], "axis": axis}, in_shape, weights


def _need_sequence(kind: str, in_shape: Shape, source: str) -> tuple[int, int]:
    if len(in_shape) != 2:
        hint = ("an image [1, 28, 28] becomes 28 steps of 28 features with Reshape([28, 28])"
                if len(in_shape) == 3 else "sequences are [T, F]; use Reshape([T, F]) before it")
        raise LayerError(f"{kind} needs an input of shape [T, F], but {source} {_shape_str(in_shape)}", hint)
    return in_shape  # type: ignore[return-value]


def build_lstm(a: dict, in_shape: Shape, source: str):
    t, f = _need_sequence("LSTM", in_shape, source)
    u = a["units"]
    weights = [Weight("kernel", (f, 4 * u), True, "glorot_uniform"),
               Weight("recurrent_kernel", (u, 4 * u), True, "orthogonal"),
               Weight("bias", (4 * u,), True, "lstm_bias")]
    out = (t, u) if a["return_sequences"] else (u,)
    return {"units": u, "return_sequences": a["return_sequences"], "activation": a["activation"],
            "recurrent_activation": "sigmoid"}, out, weights


def build_gru(a: dict, in_shape: Shape, source: str):
    t, f = _need_sequence("GRU", in_shape, source)
    u = a["units"]
    weights = [Weight("kernel", (f, 3 * u), True, "glorot_uniform"),
               Weight("recurrent_kernel", (u, 3 * u), True, "orthogonal"),
               Weight("bias", (2, 3 * u), True, "zeros")]
    out = (t, u) if a["return_sequences"] else (u,)
    return {"units": u, "return_sequences": a["return_sequences"], "activation": a["activation"],
            "recurrent_activation": "sigmoid", "reset_after": True}, out, weights


def build_embedding(a: dict, in_shape: Shape, source: str):
    if len(in_shape) != 1:
        raise LayerError(f"Embedding needs token ids of shape [T], but {source} {_shape_str(in_shape)}",
                         "write `input [T] int` and put Embedding first")
    weights = [Weight("embeddings", (a["vocab"], a["dim"]), True, "uniform_0.05")]
    return {"vocab": a["vocab"], "dim": a["dim"]}, (in_shape[0], a["dim"]), weights


def build_flatten(a: dict, in_shape: Shape, source: str):
    return {}, (prod(in_shape),), []


def build_reshape(a: dict, in_shape: Shape, source: str):
    dims, total = a["shape"], prod(in_shape)
    known = prod(d for d in dims if d != -1)
    if -1 in dims:
        if total % known:
            raise LayerError(f"cannot reshape {_shape_str(in_shape)} ({total} values) to {_shape_str(dims)}",
                             f"{total} is not divisible by {known}", "shape")
        dims = tuple(total // known if d == -1 else d for d in dims)
    elif known != total:
        raise LayerError(f"cannot reshape {_shape_str(in_shape)} ({total} values) to {_shape_str(dims)} ({known} values)",
                         "the number of values must stay the same; one dimension may be -1", "shape")
    return {"shape": dims}, dims, []


def build_dropout(a: dict, in_shape: Shape, source: str):
    return {"rate": a["rate"]}, in_shape, []


def _build_activation(kind: str):
    def build(a: dict, in_shape: Shape, source: str):
        attrs = {"activation": ACTIVATION_LAYERS[kind]}
        if kind == "LeakyReLU":
            attrs["alpha"] = a["alpha"]
        return attrs, in_shape, []

    return build


# ---------------------------------------------------------------- merges
# A merge node's builder gets the shapes of all its inputs, in order.


def build_add(a: dict, in_shapes: tuple[Shape, ...], source: str):
    """Keras's Add: element-wise sum of inputs of one shape."""
    first = in_shapes[0]
    for other in in_shapes[1:]:
        if other != first:
            raise LayerError(f"Add needs inputs of one shape, got {_shape_str(first)} and {_shape_str(other)}")
    return {}, first, []


def build_concat(a: dict, in_shapes: tuple[Shape, ...], source: str):
    """Keras's Concatenate along `axis` of the channels-first sample shape
    (0: channels of [C, H, W], features of [F]; negative counts from the end)."""
    rank = len(in_shapes[0])
    axis = a["axis"] + rank if a["axis"] < 0 else a["axis"]
    if not 0 <= axis < rank:
        raise LayerError(f"concat axis {a['axis']} is out of range for inputs of shape {_shape_str(in_shapes[0])}",
                         f"axes of a {rank}-axis sample are 0..{rank - 1} (or -{rank}..-1)", "axis")
    for other in in_shapes[1:]:
        rest = lambda s: s[:axis] + s[axis + 1:]  # noqa: E731
        if len(other) != rank or rest(other) != rest(in_shapes[0]):
            raise LayerError(f"concat branches must agree on every axis but {axis}: got "
                             f"{_shape_str(in_shapes[0])} and {_shape_str(other)}")
    out = in_shapes[0][:axis] + (sum(s[axis] for s in in_shapes),) + in_shapes[0][axis + 1:]
    return {"axis": axis}, out, []


# ---------------------------------------------------------------- multiply-adds


def _macs_dense(layer: Layer) -> int:
    rows = prod(layer.input_shape[:-1])
    return rows * layer.params


def _macs_conv2d(layer: Layer) -> int:
    _, h, w = layer.output_shape
    return h * w * layer.params


def _macs_conv_transpose2d(layer: Layer) -> int:
    # Every input pixel scatters a full kernel; the bias is added per output pixel.
    c, h, w = layer.input_shape
    kh, kw = layer.attrs["kernel"]
    f, oh, ow = layer.output_shape
    return h * w * kh * kw * c * f + (oh * ow * f if layer.attrs["bias"] else 0)


def _macs_recurrent(layer: Layer) -> int:
    return layer.input_shape[0] * layer.params


def _macs_batch_norm(layer: Layer) -> int:
    return layer.trainable_params


def _macs_add(layer: Layer) -> int:
    # One addition per element for each input after the first.
    return (len(layer.input_shapes) - 1) * prod(layer.output_shape)


def _no_macs(layer: Layer) -> int:
    return 0


# ---------------------------------------------------------------- the table


@dataclass(frozen=True)
class LayerDef:
    kind: str
    snake: str  # prefix for automatic names: conv2d_1, batch_norm_1, ...
    args: tuple[Arg, ...]
    build: Callable[[dict, Shape, str], tuple[dict, Shape, list[Weight]]]
    macs: Callable[[Layer], int] = _no_macs
    merge: bool = False  # takes several inputs; `build` gets a tuple of their shapes

    @property
    def positional(self) -> tuple[Arg, ...]:
        return tuple(a for a in self.args if a.positional)

    def arg(self, name: str) -> Arg | None:
        return next((a for a in self.args if a.name == name), None)


_ACT = Arg("activation", "activation", Symbol("linear"))
_BIAS = Arg("bias", "bool", True)

LAYERS: dict[str, LayerDef] = {}


def _register(d: LayerDef) -> None:
    LAYERS[d.kind] = d


_register(LayerDef("Dense", "dense", (Arg("units", "int", positional=True), _ACT, _BIAS), build_dense, _macs_dense))
_register(LayerDef("Conv2D", "conv2d", (
    Arg("filters", "int", positional=True), Arg("kernel", "pair", positional=True),
    Arg("stride", "pair", 1), Arg("padding", "padding", Symbol("valid")), Arg("dilation", "pair", 1), _ACT, _BIAS,
), build_conv2d, _macs_conv2d))
_register(LayerDef("ConvTranspose2D", "conv_transpose2d", (
    Arg("filters", "int", positional=True), Arg("kernel", "pair", positional=True),
    Arg("stride", "pair", 1), Arg("padding", "transpose_padding", Symbol("valid")), _ACT, _BIAS,
), build_conv_transpose2d, _macs_conv_transpose2d))
for _kind, _snake in (("MaxPool", "max_pool"), ("AvgPool", "avg_pool")):
    _register(LayerDef(_kind, _snake, (
        Arg("size", "pair", positional=True), Arg("stride", "pair", None), Arg("padding", "padding", Symbol("valid")),
    ), _build_pool(_kind)))
_register(LayerDef("GlobalAvgPool", "global_avg_pool", (), build_global_avg_pool))
_register(LayerDef("BatchNorm", "batch_norm", (Arg("momentum", "float", 0.99), Arg("epsilon", "float", 1e-3)),
                   build_batch_norm, _macs_batch_norm))
_register(LayerDef("LSTM", "lstm", (
    Arg("units", "int", positional=True), Arg("return_sequences", "bool", False), Arg("activation", "activation", Symbol("tanh")),
), build_lstm, _macs_recurrent))
_register(LayerDef("GRU", "gru", (
    Arg("units", "int", positional=True), Arg("return_sequences", "bool", False), Arg("activation", "activation", Symbol("tanh")),
), build_gru, _macs_recurrent))
_register(LayerDef("Embedding", "embedding", (Arg("vocab", "int", positional=True), Arg("dim", "int", positional=True)),
                   build_embedding))
_register(LayerDef("Flatten", "flatten", (), build_flatten))
_register(LayerDef("Reshape", "reshape", (Arg("shape", "dims", positional=True),), build_reshape))
_register(LayerDef("Dropout", "dropout", (Arg("rate", "rate", positional=True),), build_dropout))
for _kind, _snake in (("ReLU", "relu"), ("Sigmoid", "sigmoid"), ("Tanh", "tanh"), ("Softmax", "softmax"),
                      ("GELU", "gelu"), ("ELU", "elu"), ("SiLU", "silu")):
    _register(LayerDef(_kind, _snake, (), _build_activation(_kind)))
_register(LayerDef("LeakyReLU", "leaky_relu", (Arg("alpha", "float", LEAKY_RELU_SLOPE, positional=True),),
                   _build_activation("LeakyReLU")))

# Merge nodes: made by `residual { }` (Add) and `concat { branch { } }` (Concat).
_register(LayerDef("Add", "add", (), build_add, _macs_add, merge=True))
_register(LayerDef("Concat", "concat", (Arg("axis", "axis", 0, positional=True),), build_concat, merge=True))

# Names users bring from Keras and PyTorch, answered with the specc spelling.
ALIASES = {
    "Linear": "Dense", "Conv2d": "Conv2D", "Convolution2D": "Conv2D", "Conv2DTranspose": "ConvTranspose2D",
    "ConvTranspose2d": "ConvTranspose2D", "MaxPool2d": "MaxPool", "MaxPool2D": "MaxPool", "MaxPooling2D": "MaxPool",
    "AvgPool2d": "AvgPool", "AvgPool2D": "AvgPool", "AveragePooling2D": "AvgPool",
    "GlobalAveragePooling2D": "GlobalAvgPool", "AdaptiveAvgPool2d": "GlobalAvgPool",
    "BatchNormalization": "BatchNorm", "BatchNorm2d": "BatchNorm", "BatchNorm1d": "BatchNorm",
    "Relu": "ReLU", "LeakyRelu": "LeakyReLU", "Swish": "SiLU",
    "Concatenate": "Concat",
}


def macs(layer: Layer) -> int:
    """Multiply-accumulates per sample (torchinfo's convention: weights and
    biases times output positions; exact counts for transposed convolutions)."""
    return LAYERS[layer.kind].macs(layer)


def make_layer(kind: str, name: str, in_shape, source: str = "the previous layer outputs",
               line: int | None = None, inputs: tuple[str, ...] = (), **args: Any) -> Layer:
    """Build an IR layer from Python values, filling defaults (for tests and tools).

    Bare words such as padding="same" or activation="relu" are accepted as
    strings. For a merge kind (Add, Concat) `in_shape` is a list of the input
    shapes, one per name in `inputs`.
    """
    d = LAYERS[kind]
    values = {}
    for a in d.args:
        v = args.pop(a.name, a.default)
        if v is REQUIRED:
            raise LayerError(f"{kind} needs {a.name}", None, a.name)
        if isinstance(v, str) and a.type in ("activation", "padding", "transpose_padding"):
            v = Symbol(v)
        values[a.name] = v if (v is None and a.default is None) else CONVERTERS[a.type](v, a.name)
    if args:
        raise LayerError(f"{kind} has no argument {sorted(args)[0]}")
    shapes = tuple(tuple(s) for s in in_shape) if d.merge else (tuple(in_shape),)
    attrs, out, weights = d.build(values, shapes if d.merge else shapes[0], source)
    return Layer(name, kind, attrs, shapes[0], tuple(out), tuple(weights), line, tuple(inputs), shapes)
