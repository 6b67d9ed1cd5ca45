"""Channels-first Keras functional twins of specc models, graphs included, for
the tests that use Keras as an oracle of counts and shapes (test_graphs.py,
test_keras_counts.py); importable by any test that wants a functional twin.

`keras_functional_twin(model)` walks `model.layers` in their (topological)
order with a map from node name to Keras tensor: each node's twin
(keras_twins.twin, one translator for stacks and graphs) is applied to the
tensors of the nodes it reads; `Add` is keras.layers.Add, `Concat`
keras.layers.Concatenate on the batch axis the IR's sample axis becomes
(axis + 1, channels first).

Names. Keras refuses "/" in a layer name, so the Keras layer giving node
`basic_1/conv2d_1`'s output is named `basic_1.conv2d_1` (`keras_name`; "."
cannot occur in a specc name, so the map is one to one), and its weights are
`basic_1.conv2d_1/kernel`: the canonical key with the node's "/" mapped.
A ZeroPadding2D put before a convolution with explicit padding is named
`<node>.pad`.

Padding words ('same', 'valid', 'explicit') are read from the spec text the
node was written in (its file, line and column, so block bodies and imported
files count), so that specc's own resolution of 'same' is what is checked;
a node without a source falls back to its resolved pads.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import keras  # KERAS_BACKEND is set to jax by conftest.py
from keras import layers
from keras_twins import twin

import specc
from specc import ast
from specc.ir import INPUT
from specc.parse import parse


def keras_name(node: str) -> str:
    """The Keras layer name of a specc node (`stage_1/basic_2/conv2d_1` -> `stage_1.basic_2.conv2d_1`)."""
    return node.replace("/", ".")


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


def _word(stmt: ast.LayerStmt) -> str:
    arg = next((a for a in stmt.call.args if a.name == "padding"), None)
    if arg is None:
        return "valid"
    return arg.value.name if isinstance(arg.value, ast.Name) else "explicit"


@lru_cache(maxsize=None)
def padding_words_of_text(text: str, filename: str) -> dict[tuple[int, int], str]:
    """(line, column) of every layer statement of a spec text -> its padding word."""
    words = {}
    for item in parse(text, filename).items:
        if isinstance(item, (ast.ModelDef, ast.BlockDef)):
            for s in _statements(item.body):
                if isinstance(s, ast.LayerStmt):
                    words[(s.span.line, s.span.column)] = _word(s)
    return words


def padding_word(layer: specc.ir.Layer, texts: dict[str, str] | None = None) -> str:
    """The padding word as written at the node's source (`texts`: file -> text
    for sources that are not files on disk)."""
    texts = texts or {}
    if layer.file is not None and (layer.file in texts or Path(layer.file).is_file()):
        text = texts.get(layer.file) or Path(layer.file).read_text(encoding="utf-8")
        word = padding_words_of_text(text, layer.file).get((layer.line, layer.column))
        if word is not None:
            return word
    pads = layer.attrs.get("padding", ((0, 0), (0, 0)))
    return "valid" if all(p == 0 for pair in pads for p in pair) else "explicit"


def _node_twin(layer: specc.ir.Layer, word: str) -> list:
    if layer.kind == "Add":
        group = [layers.Add()]
    elif layer.kind == "Concat":
        group = [layers.Concatenate(axis=layer.attrs["axis"] + 1)]
    else:
        group = twin(layer, word)
    for k in group[:-1]:
        k.name = keras_name(layer.name) + ".pad"
    group[-1].name = keras_name(layer.name)
    return group


def keras_functional_twin(model: specc.ir.Model, texts: dict[str, str] | None = None) -> keras.Model:
    """The Keras functional model of `model` (a stack or a graph); its layer
    giving node N's output is `net.get_layer(keras_name(N))`."""
    inputs = keras.Input(shape=model.input_shape, dtype="int32" if model.input_dtype == "int32" else "float32",
                         name="input_layer")
    tensors = {INPUT: inputs}
    for layer in model.layers:
        group = _node_twin(layer, padding_word(layer, texts) if layer.kind != "ConvTranspose2D"
                           else _transpose_word(layer, texts))
        read = [tensors[name] for name in layer.inputs]
        x = group[0](read if layer.is_merge else read[0])
        for k in group[1:]:
            x = k(x)
        tensors[layer.name] = x
    output = tensors[model.layers[-1].name] if model.layers else inputs
    return keras.Model(inputs, output, name=model.name)


def _transpose_word(layer: specc.ir.Layer, texts) -> str:
    word = padding_word(layer, texts)
    assert word in ("valid", "same"), f"{layer.name}: a ConvTranspose2D twin needs its padding word from the spec"
    return word
