"""Keras as an oracle for outputs: one spec and one set of canonical weights
give the same outputs on Keras, JAX and PyTorch (within 1e-4).

Every case of backend_cases.py (the seed specs and small specs covering every
layer option) and every model of the catalogue specs (tests/specs/) is built
as a channels-first Keras model (keras_twins.py), loaded with the same
perturbed canonical weights by name, and run in inference mode on the same
input as specc.run on both backends. The graph cases (backend_cases.GRAPHS:
residual blocks, nested and repeated blocks, concats) are built as Keras
functional models the same way.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("keras")
pytest.importorskip("torch")
pytest.importorskip("jax")

import specc  # noqa: E402
from backend_cases import GRAPHS, TEXTS, perturbed_weights, sample_input  # noqa: E402
from keras_twins import build_functional_twin, build_twin, load_canonical, padding_words  # noqa: E402

CATALOGUE = Path(__file__).parent / "specs"


def _cases() -> dict[str, tuple[str, str, str]]:
    cases = dict(TEXTS)
    for path in sorted(CATALOGUE.glob("*.spec")):
        text = path.read_text(encoding="utf-8")
        for name in specc.loads(text, filename=str(path)).models:
            cases[f"{path.stem}_{name}"] = (text, str(path), name)
    return cases


CASES = _cases()


def keras_output(model, text: str, weights, x) -> np.ndarray:
    net, finals = build_twin(model, padding_words(text)[model.name])
    load_canonical(model, finals, weights)
    return np.asarray(net(x, training=False))


def _assert_backends_equal(case, model, weights, x, expected):
    assert expected.shape == (len(x), *model.output_shape)
    scale = max(float(np.max(np.abs(expected))), 1e-6)
    for backend in ("jax", "torch"):
        np.testing.assert_allclose(specc.run(model, weights, x, backend=backend), expected,
                                   rtol=1e-4, atol=1e-4 * scale, err_msg=f"{case}: {backend} differs from Keras")


@pytest.mark.parametrize("case", sorted(CASES))
def test_outputs_equal_keras(case):
    text, file, name = CASES[case]
    model = specc.loads(text, filename=file)[name]
    weights, x = perturbed_weights(model), sample_input(model)
    _assert_backends_equal(case, model, weights, x, keras_output(model, text, weights, x))


@pytest.mark.parametrize("case", sorted(GRAPHS))
def test_graph_outputs_equal_keras_functional(case):
    model = GRAPHS[case]
    weights, x = perturbed_weights(model), sample_input(model)
    net, finals = build_functional_twin(model)
    load_canonical(model, finals, weights)
    _assert_backends_equal(case, model, weights, x, np.asarray(net(x, training=False)))


def test_every_catalogue_layer_is_compared_with_keras():
    models = [specc.loads(text, filename=file)[name] for text, file, name in CASES.values()] + list(GRAPHS.values())
    kinds = {layer.kind for model in models for layer in model.layers}
    assert kinds == set(specc.catalogue.LAYERS)
