"""specc's parameter counts and shapes equal Keras's, layer by layer.

Every model of the seed specs (specs/) and of the catalogue specs
(tests/specs/, which use every layer kind and option) is translated into a
channels-first Keras model by a small translator below, and Keras's
count_params(), trainable and non-trainable counts, every layer's output shape
(without the batch axis) and every weight's shape must equal specc's IR.

Where Keras has no twin the check is narrower, and says so:
- explicit Conv2D padding becomes ZeroPadding2D + a 'valid' Conv2D (exact);
- explicit pool padding becomes ZeroPadding2D + a 'valid' pool: the shapes and
  (zero) parameters are those of specc's pool, though Keras would let the
  padded zeros count in the values.
The padding word ('same', 'valid' or explicit) is read from the spec's syntax
tree, not from the IR, so that specc's own resolution of 'same' is what is
being checked.
"""

from __future__ import annotations

import os
from math import prod
from pathlib import Path

import pytest

os.environ.setdefault("KERAS_BACKEND", "jax")
keras = pytest.importorskip("keras")
layers = keras.layers

import specc  # noqa: E402
from specc import ast  # noqa: E402
from specc.parse import parse  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
SPEC_FILES = sorted((REPO / "specs").glob("*.spec")) + sorted((REPO / "tests" / "specs").glob("*.spec"))
CF = "channels_first"
# Random initialisers compile one XLA program per weight shape (seconds each on
# a CPU); only shapes and counts matter here.
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


def _explicit(pads) -> bool:
    return any(lo or hi for lo, hi in pads)


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
        pool = layers.MaxPooling2D if kind == "MaxPool" else layers.AveragePooling2D
        pre = [layers.ZeroPadding2D(a["padding"], data_format=CF)] if padding == "explicit" else []
        return pre + [pool(a["size"], strides=a["stride"], padding="same" if padding == "same" else "valid",
                           data_format=CF)]
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
    raise AssertionError(f"no Keras twin for {kind}: add one to the translator")


def build_twin(model: specc.ir.Model, words: list[str]):
    inputs = keras.Input(shape=model.input_shape, dtype="int32" if model.input_dtype == "int32" else "float32")
    x, finals = inputs, []
    for layer, word in zip(model.layers, words, strict=True):
        group = twin(layer, word)
        for k in group:
            x = k(x)
        finals.append(group[-1])
    return keras.Model(inputs, x, name=model.name), finals


def _count(variables) -> int:
    return sum(prod(v.shape) for v in variables)


def _cases():
    for path in SPEC_FILES:
        text = path.read_text(encoding="utf-8")
        words = padding_words(text)
        for model in specc.loads(text, filename=str(path)):
            yield pytest.param(model, words[model.name], id=f"{path.stem}:{model.name}")


CASES = list(_cases())


@pytest.mark.parametrize("model, words", CASES)
def test_keras_twin_counts_and_shapes(model, words):
    net, finals = build_twin(model, words)
    report = specc.summary(model)
    assert net.count_params() == report.total == model.params
    assert _count(net.trainable_weights) == report.trainable
    assert _count(net.non_trainable_weights) == report.non_trainable
    assert tuple(net.output.shape[1:]) == model.output_shape
    for layer, k in zip(model.layers, finals):
        assert tuple(k.output.shape[1:]) == layer.output_shape, layer.name
        assert k.count_params() == layer.params, layer.name
        got = {v.path.rsplit("/", 1)[-1]: (tuple(v.shape), v.trainable) for v in k.weights}
        want = {w.name: (w.shape, w.trainable) for w in layer.weights}
        assert got == want, layer.name  # canonical weights: Keras's names, layouts and trainability


def test_every_catalogue_layer_has_a_keras_twin_checked():
    checked = {layer.kind for model, _ in (c.values for c in CASES) for layer in model.layers}
    assert checked == set(specc.catalogue.LAYERS)


def test_every_padding_form_is_checked():
    forms = set()
    for model, words in (c.values for c in CASES):
        for layer, word in zip(model.layers, words):
            if layer.kind in ("Conv2D", "ConvTranspose2D", "MaxPool", "AvgPool"):
                forms.add((layer.kind, word))
    assert forms >= {(k, w) for k in ("Conv2D", "MaxPool", "AvgPool") for w in ("valid", "same", "explicit")}
    assert forms >= {("ConvTranspose2D", "valid"), ("ConvTranspose2D", "same")}
