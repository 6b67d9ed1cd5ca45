"""specc's parameter counts and shapes equal Keras's, node by node.

Every model of the seed specs (specs/), of the catalogue specs (tests/specs/,
which use every layer kind and option) and of the graph specs
(tests/specs/graphs/: blocks, repeat, residual, concat, import) is translated
into a channels-first Keras functional model (keras_twins.py). Keras's
count_params(), trainable and non-trainable counts, every node's output shape
(without the batch axis) and every weight's name, shape and trainability must
equal specc's IR.
"""

from __future__ import annotations

from math import prod
from pathlib import Path

import pytest

import keras  # noqa: F401
import specc  # noqa: E402
from keras_twins import build_twin, keras_name, padding_word  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
SPEC_FILES = (sorted((REPO / "specs").glob("*.spec")) + sorted((REPO / "tests" / "specs").glob("*.spec"))
              + sorted((REPO / "tests" / "specs" / "graphs").glob("*.spec")))


def _count(variables) -> int:
    return sum(prod(v.shape) for v in variables)


CASES = [pytest.param(model, id=f"{path.stem}:{model.name}")
         for path in SPEC_FILES for model in specc.load(path)]


@pytest.mark.parametrize("model", CASES)
def test_keras_twin_counts_and_shapes(model):
    net = build_twin(model)
    report = specc.summary(model)
    assert net.count_params() == report.total == model.params
    assert _count(net.trainable_weights) == report.trainable
    assert _count(net.non_trainable_weights) == report.non_trainable
    assert tuple(net.output.shape[1:]) == model.output_shape
    for layer in model.layers:
        k = net.get_layer(keras_name(layer.name))
        assert tuple(k.output.shape[1:]) == layer.output_shape, layer.name
        assert k.count_params() == layer.params, layer.name
        got = {v.path.rsplit("/", 1)[-1]: (tuple(v.shape), v.trainable) for v in k.weights}
        want = {w.name: (w.shape, w.trainable) for w in layer.weights}
        assert got == want, layer.name  # canonical weights: Keras's names, layouts and trainability


def test_twin_weights_are_the_canonical_keys():
    """A twin's weight paths are the canonical keys with '/' in node names mapped to '.'."""
    model = specc.load(REPO / "tests" / "specs" / "graphs" / "graph_nested_blocks.spec")["nested"]
    net = build_twin(model)
    paths = sorted(v.path for v in net.weights)
    assert paths == sorted(f"{keras_name(key.rsplit('/', 1)[0])}/{key.rsplit('/', 1)[1]}"
                           for key in model.weight_specs())
    assert "stage_1.basic_1.conv_bn_1.conv2d_1/kernel" in paths


def test_every_catalogue_layer_has_a_keras_twin_checked():
    checked = {layer.kind for model in (c.values[0] for c in CASES) for layer in model.layers}
    assert checked == set(specc.catalogue.LAYERS)


def test_every_padding_form_is_checked():
    forms = {(layer.kind, padding_word(layer)) for model in (c.values[0] for c in CASES) for layer in model.layers
             if layer.kind in ("Conv2D", "ConvTranspose2D", "MaxPool", "AvgPool")}
    assert forms >= {(k, w) for k in ("Conv2D", "MaxPool", "AvgPool") for w in ("valid", "same", "explicit")}
    assert forms >= {("ConvTranspose2D", "valid"), ("ConvTranspose2D", "same")}
