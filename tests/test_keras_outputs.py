"""Keras as an oracle for outputs: one model and one set of canonical weights
give the same outputs on Keras, JAX and PyTorch (within 1e-4).

Every case of backend_cases.py (the seed specs, the graph specs of
tests/specs/graphs/, small specs covering every layer option, and the graphs
built as IR) and every model of the catalogue specs (tests/specs/) is built
as a channels-first Keras functional model (keras_twins.py), loaded with the
same perturbed canonical weights by name, and run in inference mode on the
same input as specc.run on both backends.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import keras  # noqa: F401
import torch  # noqa: F401
import jax  # noqa: F401
import specc  # noqa: E402
from backend_cases import MODELS, SOURCES, perturbed_weights, sample_input  # noqa: E402
from keras_twins import build_twin, load_canonical  # noqa: E402

CATALOGUE = Path(__file__).parent / "specs"
CASES = {**MODELS, **{f"{path.stem}_{model.name}": model
                      for path in sorted(CATALOGUE.glob("*.spec")) for model in specc.load(path)}}


def keras_output(model, weights, x) -> np.ndarray:
    net = build_twin(model, SOURCES)
    load_canonical(net, weights)
    return np.asarray(net(x, training=False))


@pytest.mark.parametrize("case", sorted(CASES))
def test_outputs_equal_keras(case):
    model = CASES[case]
    weights, x = perturbed_weights(model), sample_input(model)
    expected = keras_output(model, weights, x)
    assert expected.shape == (len(x), *model.output_shape)
    scale = max(float(np.max(np.abs(expected))), 1e-6)
    for backend in ("jax", "torch"):
        np.testing.assert_allclose(specc.run(model, weights, x, backend=backend), expected,
                                   rtol=1e-4, atol=1e-4 * scale, err_msg=f"{case}: {backend} differs from Keras")


def test_every_catalogue_layer_is_compared_with_keras():
    kinds = {layer.kind for model in CASES.values() for layer in model.layers}
    assert kinds == set(specc.catalogue.LAYERS)


def test_the_graph_specs_are_compared_with_keras():
    graph_specs = {p.stem for p in (CATALOGUE / "graphs").glob("*.spec")} - {"graph_lib"}
    assert graph_specs and all(any(case.startswith(stem + "_") for case in CASES) for stem in graph_specs)
