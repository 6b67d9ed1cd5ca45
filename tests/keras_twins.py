"""Channels-first Keras twins of specc models, stacks and graphs alike: the
one translator through which the tests use Keras as an oracle
(test_keras_counts.py: counts and shapes; test_keras_outputs.py: outputs on
the same canonical weights).

`build_twin(model)` is a Keras functional model. It walks `model.layers` in
their (topological) order with a map from node name to Keras tensor and
applies each node's twin (`twin`) to the tensors of the nodes it reads; a
stack is the chain case. The translator is written from the language
contract, layer by layer, with Keras's own layers wherever Keras has one:
Add is Keras's Add, Concat its Concatenate on the channels-first batch axis
(the IR's sample axis + 1). Two forms have no Keras layer and are built from
keras.ops:
- explicit Conv2D padding is ZeroPadding2D + a 'valid' Conv2D (exact);
- explicit pool padding never lets padded positions count (the contract):
  MaxPool pads with -inf, AvgPool divides the window sum by the number of real
  values in it.

Names. Keras refuses "/" in a layer name, so the Keras layer giving node N's
output is `keras_name(N)` ("/" -> "."; "." cannot occur in a specc name, so
the map is one to one) and its weights are `<keras_name(N)>/<param>`: the
canonical key with the node's "/" mapped. `load_canonical` assigns canonical
weights by those names. A ZeroPadding2D put before a convolution is named
`<keras_name(N)>.pad`.

Padding words ('same', 'valid', 'explicit') are read from the spec text at
each node's source (file, line, column: block bodies and imported files
count), so that specc's own resolution of 'same' is what is checked. A node
with no source text (graphs built in code) or whose padding is a block
parameter falls back to its resolved pads, which are exact as explicit
padding, 'same' included; ConvTranspose2D's crop has no such reading.
"""

from __future__ import annotations

from functools import lru_cache
from math import prod
from pathlib import Path

import keras  # KERAS_BACKEND is set to jax by conftest.py
import numpy as np
from keras import layers, ops

import specc
from specc import ast
from specc.ir import INPUT
from specc.parse import parse

from backend_cases import perturbed_weights, sample_input

CF = "channels_first"
# Random initialisers compile one XLA program per weight shape (seconds each on
# a CPU); the tests count weights or assign canonical ones.
FAST = {"kernel_initializer": "zeros"}


def keras_name(node: str) -> str:
    """The Keras layer name of a specc node (`stage_1/basic_2/conv2d_1` -> `stage_1.basic_2.conv2d_1`)."""
    return node.replace("/", ".")


def _leaky_relu_001(x):
    # specc's `activation=leaky_relu` has slope 0.01 (Keras's function defaults to 0.2).
    return keras.activations.leaky_relu(x, negative_slope=0.01)


def keras_activation(name: str):
    return _leaky_relu_001 if name == "leaky_relu" else name


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
    """The Keras layers equivalent to one IR node; the last one gives its output."""
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


# ---------------------------------------------------------------- padding words from the spec text


def _statements(body):
    for s in body:
        yield s
        if isinstance(s, ast.Residual):
            yield from _statements(s.body + (s.shortcut or ()))
        elif isinstance(s, ast.Repeat):
            yield from _statements(s.body)
        elif isinstance(s, ast.Concat):
            for b in s.branches:
                yield from _statements(b.body)


def _word(stmt: ast.LayerStmt) -> str | None:
    """'valid', 'same' or 'explicit' as written; None for a name the text cannot resolve (a parameter)."""
    arg = next((a for a in stmt.call.args if a.name == "padding"), None)
    if arg is None:
        return "valid"
    if isinstance(arg.value, ast.Name):
        return arg.value.name if arg.value.name in ("valid", "same") else None
    return "explicit"


@lru_cache(maxsize=None)
def padding_words_of_text(text: str, filename: str) -> dict[tuple[int, int], str | None]:
    """(line, column) of every layer statement of a spec text -> its padding word."""
    words = {}
    for item in parse(text, filename).items:
        if isinstance(item, (ast.ModelDef, ast.BlockDef)):
            for s in _statements(item.body):
                if isinstance(s, ast.LayerStmt):
                    words[(s.span.line, s.span.column)] = _word(s)
    return words


def _resolved_word(layer: specc.ir.Layer) -> str:
    if layer.kind == "ConvTranspose2D":
        raise AssertionError(f"{layer.name}: a ConvTranspose2D twin needs its padding word from the spec text")
    pads = layer.attrs.get("padding", ((0, 0), (0, 0)))
    return "valid" if all(p == 0 for pair in pads for p in pair) else "explicit"


def padding_word(layer: specc.ir.Layer, texts: dict[str, str] | None = None) -> str:
    """The padding word written at the node's source; `texts` maps a file name
    to its text for specs that are not files on disk (specc.loads)."""
    texts = texts or {}
    if layer.file is not None and (layer.file in texts or Path(layer.file).is_file()):
        text = texts.get(layer.file) or Path(layer.file).read_text(encoding="utf-8")
        word = padding_words_of_text(text, layer.file).get((layer.line, layer.column))
        if word is not None:
            return word
    return _resolved_word(layer)


# ---------------------------------------------------------------- models and weights


def _node_twin(layer: specc.ir.Layer, word: str) -> list:
    group = twin(layer, word)
    for k in group[:-1]:
        k.name = keras_name(layer.name) + ".pad"
    group[-1].name = keras_name(layer.name)
    return group


def build_twin(model: specc.ir.Model, texts: dict[str, str] | None = None) -> keras.Model:
    """The Keras functional model of `model` (a stack or a graph); the layer
    giving node N's output is `net.get_layer(keras_name(N))`."""
    dtype = "int32" if model.input_dtype == "int32" else "float32"
    inputs = keras.Input(shape=model.input_shape, dtype=dtype, name="input_layer")
    tensors = {INPUT: inputs}
    for layer in model.layers:
        group = _node_twin(layer, padding_word(layer, texts))
        read = [tensors[name] for name in layer.inputs]
        x = group[0](read if layer.is_merge else read[0])
        for k in group[1:]:
            x = k(x)
        tensors[layer.name] = x
    output = tensors[model.layers[-1].name] if model.layers else inputs
    return keras.Model(inputs, output, name=model.name)


def load_canonical(net: keras.Model, weights) -> None:
    """Assign canonical weights ("<node>/<param>", Keras's names and layouts)
    to a Keras model whose layers are named `keras_name(node)`; every weight
    of each side must find its partner."""
    assigned = set()
    for k in net.layers:
        for variable in k.weights:
            key = f"{k.name.replace('.', '/')}/{variable.path.rsplit('/', 1)[-1]}"
            variable.assign(weights[key])
            assigned.add(key)
    assert assigned == set(weights), f"canonical weights without a Keras partner: {sorted(set(weights) - assigned)}"


def assert_model_equals_keras(model: specc.ir.Model, net: keras.Model, what: str) -> None:
    """A spec's model against a Keras model built by hand from the same
    description: total, trainable and non-trainable counts, the output shape,
    and outputs on jax and torch from the same canonical weights (loaded into
    Keras by name, so every canonical key must be a Keras weight) within 1e-4."""
    def count(variables) -> int:
        return sum(prod(v.shape) for v in variables)

    report = specc.summary(model)
    assert (report.total, report.trainable, report.non_trainable) == (
        net.count_params(), count(net.trainable_weights), count(net.non_trainable_weights)), what
    assert model.output_shape == tuple(net.output.shape[1:]), what
    weights, x = perturbed_weights(model), sample_input(model, batch=4)
    load_canonical(net, weights)
    expected = np.asarray(net(x, training=False))
    scale = max(float(np.max(np.abs(expected))), 1e-6)
    for backend in ("jax", "torch"):
        np.testing.assert_allclose(specc.run(model, weights, x, backend=backend), expected, rtol=1e-4,
                                   atol=1e-4 * scale, err_msg=f"{what} on {backend} differs from Keras")
