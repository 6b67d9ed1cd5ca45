"""Channels-first Keras twins of specc models, for the tests that use Keras as
an oracle (test_keras_counts.py: counts and shapes; test_keras_outputs.py:
outputs on the same canonical weights).

The translator is written from the language contract, layer by layer, with
Keras's own layers wherever Keras has one. Two forms have no Keras layer and
are built from keras.ops:
- explicit Conv2D padding is ZeroPadding2D + a 'valid' Conv2D (exact);
- explicit pool padding never lets padded positions count (the contract):
  MaxPool pads with -inf, AvgPool divides the window sum by the number of real
  values in it.
The padding word ('same', 'valid' or explicit) is read from the spec's syntax
tree, not from the IR, so that specc's own resolution of 'same' is what is
being checked.

Graphs (nodes with `inputs`, Add and Concat) become Keras functional models
(`build_functional_twin`): each node's twin is applied to the Keras tensors of
the nodes it reads; Add is Keras's Add, Concat its Concatenate on the
channels-first batch axis (the IR's sample axis + 1). Graphs built in code
have no spec text: their padding words come from the IR's resolved pads
(`ir_padding_word`), explicit pads being exact for 'same' too.
"""

from __future__ import annotations

import keras  # KERAS_BACKEND is set to jax by conftest.py
from keras import layers, ops

import specc
from specc import ast
from specc.ir import INPUT
from specc.parse import parse

CF = "channels_first"
# Random initialisers compile one XLA program per weight shape (seconds each on
# a CPU); the tests count weights or assign canonical ones.
FAST = {"kernel_initializer": "zeros"}


def _leaky_relu_001(x):
    # specc's `activation=leaky_relu` has slope 0.01 (Keras's function defaults to 0.2).
    return keras.activations.leaky_relu(x, negative_slope=0.01)


def keras_activation(name: str):
    return _leaky_relu_001 if name == "leaky_relu" else name


def padding_words(text: str) -> dict[str, list[str]]:
    """Per model, per layer statement: 'valid', 'same' or 'explicit', as written."""
    out: dict[str, list[str]] = {}
    for item in parse(text).items:
        if not isinstance(item, ast.ModelDef):
            continue
        words = []
        for stmt in item.body:
            if not isinstance(stmt, ast.LayerStmt):
                continue
            arg = next((a for a in stmt.call.args if a.name == "padding"), None)
            if arg is None:
                words.append("valid")
            elif isinstance(arg.value, ast.Name):
                words.append(arg.value.name)
            else:
                words.append("explicit")
        out[item.name] = words
    return out


class PaddedPool(layers.Layer):
    """A pool with explicit padding in which padded positions never count."""

    def __init__(self, kind: str, size, stride, padding, **kwargs):
        super().__init__(**kwargs)
        self.kind, self.size, self.stride = kind, tuple(size), tuple(stride)
        self.pads = [(0, 0), (0, 0), *(tuple(p) for p in padding)]

    def _pool(self, x):
        pool = ops.max_pool if self.kind == "MaxPool" else ops.average_pool
        return pool(x, self.size, self.stride, padding="valid", data_format=CF)

    def call(self, x):
        if self.kind == "MaxPool":
            return self._pool(ops.pad(x, self.pads, constant_values=float("-inf")))
        real = self._pool(ops.pad(ops.ones_like(x), self.pads))  # fraction of each window that is real
        return self._pool(ops.pad(x, self.pads)) / real

    def compute_output_shape(self, shape):
        out = list(shape[:2])
        for n, (lo, hi), k, s in zip(shape[2:], self.pads[2:], self.size, self.stride):
            out.append((n + lo + hi - k) // s + 1)
        return tuple(out)


def twin(layer: specc.ir.Layer, padding: str) -> list:
    """The Keras layers equivalent to one IR layer; the last one gives its output."""
    a, kind = layer.attrs, layer.kind
    if kind == "Dense":
        return [layers.Dense(a["units"], activation=keras_activation(a["activation"]), use_bias=a["bias"], **FAST)]
    if kind == "Conv2D":
        pre = [layers.ZeroPadding2D(a["padding"], data_format=CF)] if padding == "explicit" else []
        return pre + [layers.Conv2D(a["filters"], a["kernel"], strides=a["stride"], dilation_rate=a["dilation"],
                                    padding="same" if padding == "same" else "valid", data_format=CF,
                                    activation=keras_activation(a["activation"]), use_bias=a["bias"], **FAST)]
    if kind == "ConvTranspose2D":
        return [layers.Conv2DTranspose(a["filters"], a["kernel"], strides=a["stride"], padding=padding,
                                       data_format=CF, activation=keras_activation(a["activation"]),
                                       use_bias=a["bias"], **FAST)]
    if kind in ("MaxPool", "AvgPool"):
        if padding == "explicit":
            return [PaddedPool(kind, a["size"], a["stride"], a["padding"])]
        pool = layers.MaxPooling2D if kind == "MaxPool" else layers.AveragePooling2D
        return [pool(a["size"], strides=a["stride"], padding=padding, data_format=CF)]
    if kind == "GlobalAvgPool":
        return [layers.GlobalAveragePooling2D(data_format=CF)]
    if kind == "BatchNorm":
        # Channels of an image (Keras axis 1 with the batch), the features of [F] and [T, F].
        axis = 1 if len(layer.input_shape) == 3 else -1
        return [layers.BatchNormalization(axis=axis, momentum=a["momentum"], epsilon=a["epsilon"])]
    if kind == "LSTM":
        return [layers.LSTM(a["units"], return_sequences=a["return_sequences"], activation=a["activation"],
                            recurrent_initializer="zeros", **FAST)]
    if kind == "GRU":
        return [layers.GRU(a["units"], return_sequences=a["return_sequences"], activation=a["activation"],
                           reset_after=True, recurrent_initializer="zeros", **FAST)]
    if kind == "Embedding":
        return [layers.Embedding(a["vocab"], a["dim"], embeddings_initializer="zeros")]
    if kind == "Flatten":
        return [layers.Flatten()]
    if kind == "Reshape":
        return [layers.Reshape(a["shape"])]
    if kind == "Dropout":
        return [layers.Dropout(a["rate"])]
    if kind == "LeakyReLU":
        return [layers.LeakyReLU(negative_slope=a["alpha"])]
    if kind == "ReLU":
        return [layers.ReLU()]
    if kind == "Softmax":
        return [layers.Softmax(axis=-1)]
    if kind == "ELU":
        return [layers.ELU(alpha=1.0)]
    if kind in ("Sigmoid", "Tanh", "GELU", "SiLU"):
        return [layers.Activation(a["activation"])]
    if kind == "Add":
        return [layers.Add()]
    if kind == "Concat":
        return [layers.Concatenate(axis=a["axis"] + 1)]
    raise AssertionError(f"no Keras twin for {kind}: add one to the translator")


def build_twin(model: specc.ir.Model, words: list[str]):
    """(keras.Model, the Keras layer giving each IR layer's output, in order)."""
    inputs = keras.Input(shape=model.input_shape, dtype="int32" if model.input_dtype == "int32" else "float32")
    x, finals = inputs, []
    for layer, word in zip(model.layers, words, strict=True):
        group = twin(layer, word)
        for k in group:
            x = k(x)
        finals.append(group[-1])
    return keras.Model(inputs, x, name=model.name), finals


def ir_padding_word(layer: specc.ir.Layer) -> str:
    """'valid' or 'explicit' from a node's resolved pads (a graph built in code
    has no spec text); ConvTranspose2D's crop has no such reading."""
    if layer.kind == "ConvTranspose2D":
        raise AssertionError("a ConvTranspose2D twin needs the padding word from the spec text")
    pads = layer.attrs.get("padding", ((0, 0), (0, 0)))
    return "valid" if all(p == 0 for pair in pads for p in pair) else "explicit"


def build_functional_twin(model: specc.ir.Model, words: list[str] | None = None):
    """(keras functional Model, the Keras layer giving each IR node's output,
    in order) for a model that may be a graph; `words` as in `build_twin`,
    else read from the IR."""
    words = words or [ir_padding_word(layer) for layer in model.layers]
    inputs = keras.Input(shape=model.input_shape, dtype="int32" if model.input_dtype == "int32" else "float32")
    values, finals = {INPUT: inputs}, []
    for layer, word in zip(model.layers, words, strict=True):
        group = twin(layer, word)
        read = [values[name] for name in layer.inputs]
        x = group[0](read if layer.is_merge else read[0])
        for k in group[1:]:
            x = k(x)
        values[layer.name] = x
        finals.append(group[-1])
    return keras.Model(inputs, values[model.layers[-1].name], name=model.name), finals


def load_canonical(model: specc.ir.Model, finals: list, weights) -> None:
    """Assign canonical weights ("<layer>/<param>", Keras's names and layouts) to the twin."""
    for layer, k in zip(model.layers, finals, strict=True):
        for variable in k.weights:
            variable.assign(weights[f"{layer.name}/{variable.path.rsplit('/', 1)[-1]}"])
