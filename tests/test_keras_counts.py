"""specc's parameter counts and shapes equal Keras's, layer by layer.

Every model of the seed specs (specs/) and of the catalogue specs
(tests/specs/, which use every layer kind and option) is translated into a
channels-first Keras model (keras_twins.py), and Keras's count_params(),
trainable and non-trainable counts, every layer's output shape (without the
batch axis) and every weight's name, shape and trainability must equal
specc's IR.
"""

from __future__ import annotations

from math import prod
from pathlib import Path

import pytest

pytest.importorskip("keras")

import specc  # noqa: E402
from keras_twins import build_twin, padding_words  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
SPEC_FILES = sorted((REPO / "specs").glob("*.spec")) + sorted((REPO / "tests" / "specs").glob("*.spec"))


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
