"""Golden outputs for both backends on the same canonical weights.

For every case of backend_cases.py (every model of specs/; of the graph
specs tests/specs/graphs/: nested blocks, repeat inside blocks, residual with
and without a shortcut, concats of three branches, an import, the oracle
specs; small specs that together exercise every layer option; and the graphs
built as IR), tests/golden/backends/<case>.safetensors holds a fixed input
"x", canonical weights "w/<key>" (perturbed, so biases, BatchNorm statistics
and LSTM gates all matter) and the expected output "y". The files are written
only with --update-golden (from the PyTorch backend, after checking that JAX
agrees); without the flag a missing file fails. Both backends must reproduce
"y" to a relative tolerance of 1e-5. Gradients of every graph agree between
the backends.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import specc
from backend_cases import MODELS, perturbed_weights, sample_input

GOLDEN = Path(__file__).parent / "golden" / "backends"


def _assert_close(actual, expected, what):
    scale = max(float(np.max(np.abs(expected))), 1e-6)
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5 * scale, err_msg=what)


@pytest.mark.parametrize("case", sorted(MODELS))
def test_golden_output(case, update_golden):
    import torch  # noqa: F401
    import jax  # noqa: F401
    from safetensors.numpy import load_file, save_file

    model = MODELS[case]
    path = GOLDEN / f"{case}.safetensors"
    if update_golden:
        weights, x = perturbed_weights(model), sample_input(model)
        y = specc.run(model, weights, x, backend="torch")
        _assert_close(specc.run(model, weights, x, backend="jax"), y, f"{case}: jax disagrees with torch")
        GOLDEN.mkdir(parents=True, exist_ok=True)
        arrays = {"x": x, "y": y, **{f"w/{k}": v for k, v in weights.items()}}
        save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()}, str(path))
    assert path.is_file(), f"golden file {path} is missing: run pytest --update-golden and review it"
    stored = load_file(str(path))
    weights = {k[2:]: v for k, v in stored.items() if k.startswith("w/")}
    assert set(weights) == set(model.weight_specs()), f"{case}: golden weights do not fit the model"
    for backend in ("torch", "jax"):
        _assert_close(specc.run(model, weights, stored["x"], backend=backend), stored["y"], f"{case} on {backend}")


# Every graph: built as IR ("graph_*") and from the graph specs ("graph_<file>_*", "oracle_*").
def test_no_golden_output_is_stale():
    stale = {p.stem for p in GOLDEN.glob("*.safetensors")} - set(MODELS)
    assert not stale, f"golden outputs of cases that no longer exist: {sorted(stale)}"


GRAD_CASES = ["conv_options", "conv_transpose", "pools", "batch_norm", "recurrent", "embedding",
              "activations", "lenet_lenet", "gan_generator", "lstm_lstm"] + sorted(
    case for case in MODELS if case.startswith(("graph_", "oracle_")))


@pytest.mark.parametrize("case", GRAD_CASES)
def test_gradient_parity(case):
    """Gradients of a fixed mse loss w.r.t. the canonical weights agree (1e-4)."""
    import torch  # noqa: F401
    import jax  # noqa: F401
    from specc.backend import get

    model = MODELS[case]
    weights, x = perturbed_weights(model), sample_input(model)
    target = np.random.default_rng(5).normal(size=(len(x), *model.output_shape)).astype(np.float32)
    loss_t, grads_t = get("torch").gradients(model, weights, x, target)
    loss_j, grads_j = get("jax").gradients(model, weights, x, target)
    assert abs(loss_t - loss_j) <= 1e-4 * max(1.0, abs(loss_t))
    trainable = {k for k, s in model.weight_specs().items() if s.trainable}
    assert set(grads_t) == set(grads_j) == trainable
    for key in trainable:
        scale = max(float(np.max(np.abs(grads_t[key]))), 1e-6)
        np.testing.assert_allclose(grads_j[key], grads_t[key], rtol=1e-4, atol=1e-4 * scale, err_msg=key)


@pytest.mark.parametrize("backend", ["torch", "jax"])
@pytest.mark.parametrize("case", sorted(MODELS))
def test_round_trip_and_counts(case, backend):
    """canonical -> native -> canonical is exact; native counts equal the report."""
    from specc.backend import get

    model = MODELS[case]
    be = get(backend)
    weights = perturbed_weights(model)
    back = be.from_native(model, be.to_native(model, weights))
    assert set(back) == set(weights)
    for key in weights:
        assert np.array_equal(back[key], weights[key]), key
    native = be.to_native(model, weights)
    leaves = native.values() if backend == "torch" else _jax_leaves(native)
    assert sum(int(np.prod(np.shape(v))) for v in leaves) == specc.summary(model).total


def _jax_leaves(native):
    import jax

    return jax.tree.leaves(native)
