"""specc's parameter counts and shapes equal Keras's, layer by layer.

Every model of the seed specs (specs/), of the catalogue specs (tests/specs/,
which use every layer kind and option) and of the graph specs
(tests/specs/graphs/: blocks, repeat, residual, concat, import) is translated
into a channels-first Keras model: a Sequential-style chain for stacks
(keras_twins.py), a functional model for graphs (keras_graph_twins.py).
Keras's count_params(), trainable and non-trainable counts, every layer's
output shape (without the batch axis) and every weight's name, shape and
trainability must equal specc's IR.
"""

from __future__ import annotations

from math import prod
from pathlib import Path

import pytest

pytest.importorskip("keras")

import specc  # noqa: E402
from keras_graph_twins import keras_functional_twin, keras_name  # noqa: E402
from keras_twins import build_twin, padding_words  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
SPEC_FILES = sorted((REPO / "specs").glob("*.spec")) + sorted((REPO / "tests" / "specs").glob("*.spec"))
GRAPH_FILES = sorted((REPO / "tests" / "specs" / "graphs").glob("*.spec"))


def _count(variables) -> int:
    return sum(prod(v.shape) for v in variables)


def _cases():
    for path in SPEC_FILES + GRAPH_FILES:
        text = path.read_text(encoding="utf-8")
        words = padding_words(text)
        for model in specc.loads(text, filename=str(path)):
            yield pytest.param(model, words.get(model.name), id=f"{path.stem}:{model.name}")


CASES = list(_cases())


def _twin_layers(model, words):
    """(Keras model, the Keras layer giving each IR node's output, in order)."""
    if model.is_sequential and words is not None and len(words) == len(model.layers):
        return build_twin(model, words)
    net = keras_functional_twin(model)
    return net, [net.get_layer(keras_name(layer.name)) for layer in model.layers]


@pytest.mark.parametrize("model, words", CASES)
def test_keras_twin_counts_and_shapes(model, words):
    net, finals = _twin_layers(model, words)
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


def test_graph_twin_weights_are_the_canonical_keys():
    """A graph twin's weight paths are the canonical keys with '/' in node names mapped to '.'."""
    model = specc.load(REPO / "tests" / "specs" / "graphs" / "graph_nested_blocks.spec")["nested"]
    net = keras_functional_twin(model)
    paths = sorted(v.path for v in net.weights)
    assert paths == sorted(f"{keras_name(key.rsplit('/', 1)[0])}/{key.rsplit('/', 1)[1]}"
                           for key in model.weight_specs())
    assert "stage_1.basic_1.conv_bn_1.conv2d_1/kernel" in paths


def test_every_catalogue_layer_has_a_keras_twin_checked():
    checked = {layer.kind for model, _ in (c.values for c in CASES) for layer in model.layers}
    assert checked == set(specc.catalogue.LAYERS)


def test_every_padding_form_is_checked():
    forms = set()
    for model, words in (c.values for c in CASES):
        if words is None or not model.is_sequential:
            continue
        for layer, word in zip(model.layers, words):
            if layer.kind in ("Conv2D", "ConvTranspose2D", "MaxPool", "AvgPool"):
                forms.add((layer.kind, word))
    assert forms >= {(k, w) for k in ("Conv2D", "MaxPool", "AvgPool") for w in ("valid", "same", "explicit")}
    assert forms >= {("ConvTranspose2D", "valid"), ("ConvTranspose2D", "same")}
