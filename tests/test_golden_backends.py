"""Golden outputs for both backends on the same canonical weights.

For every spec in specs/ and for small specs that together exercise every
layer option, tests/golden/backends/<case>.safetensors holds a fixed input
"x", canonical weights "w/<key>" (initial weights with every zero and one
perturbed, so biases, BatchNorm statistics and LSTM gates all matter) and the
expected output "y". The files are written only with --update-golden (from the
PyTorch backend, after checking that JAX agrees); without the flag a missing
file fails. Both backends must reproduce "y" to a relative tolerance of 1e-5.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import specc
from specc.weights import init_weights

GOLDEN = Path(__file__).parent / "golden" / "backends"
SPECS = Path(__file__).resolve().parents[1] / "specs"

# Small specs that together cover every layer option of the catalogue.
CASES = {
    "conv_options": """
model m {
    input [3, 11, 9]
    Conv2D(4, kernel=[3, 2], stride=2, padding=same, activation=relu)
    Conv2D(5, kernel=3, dilation=2, padding=same, bias=false)
    Conv2D(3, kernel=[2, 3], padding=[1, 2], activation=elu)
    Conv2D(2, kernel=2, stride=[2, 1], padding=valid, activation=gelu)
    Flatten()
}""",
    "conv_transpose": """
model m {
    input [3, 5, 4]
    ConvTranspose2D(4, kernel=3, stride=2, padding=same, activation=relu)
    ConvTranspose2D(2, kernel=[2, 3], stride=2, padding=valid)
    ConvTranspose2D(3, kernel=1, stride=2, padding=valid, activation=tanh)
    ConvTranspose2D(2, kernel=4, stride=[2, 3], padding=same, bias=false)
}""",
    "pools": """
model m {
    input [2, 9, 7]
    MaxPool(3, stride=2, padding=same)
    AvgPool(2, stride=1, padding=same)
    AvgPool([3, 2], padding=1)
    MaxPool(2, padding=[1, 0])
    GlobalAvgPool()
}""",
    "batch_norm": """
model m {
    input [3, 6, 5]
    BatchNorm(momentum=0.9, epsilon=0.001)
    Conv2D(4, kernel=3)
    Flatten()
    Dense(6)
    BatchNorm()
    Reshape([2, 3])
    BatchNorm(epsilon=0.01)
}""",
    "recurrent": """
model m {
    input [6, 5]
    LSTM(4, return_sequences=true)
    GRU(3, return_sequences=true)
    LSTM(3, activation=relu)
    Dense(2, activation=sigmoid)
}""",
    "gru_last": """
model m {
    input [7, 3]
    GRU(5)
    Dense(4, activation=softmax)
}""",
    "embedding": """
model m {
    input [6] int
    Embedding(11, 4)
    GRU(3, return_sequences=true)
    Flatten()
    Dense(3, activation=softmax)
}""",
    "activations": """
model m {
    input [2, 3, 4]
    ReLU()
    Dense(5, activation=silu)
    LeakyReLU(0.2)
    Tanh()
    GELU()
    ELU()
    SiLU()
    Sigmoid()
    Dropout(0.5)
    Dense(3, activation=leaky_relu)
    Softmax()
}""",
}


def _cases() -> dict[str, specc.ir.Model]:
    models = {}
    for path in sorted(SPECS.glob("*.spec")):
        for model in specc.load(path).models.values():
            models[f"{path.stem}_{model.name}"] = model
    for name, text in CASES.items():
        models[name] = specc.loads(text, filename=f"<{name}>")["m"]
    return models


MODELS = _cases()


def _perturbed_weights(model, seed: int = 7) -> dict[str, np.ndarray]:
    weights = init_weights(model, seed)
    rng = np.random.default_rng(seed)
    for key, value in weights.items():
        if key.endswith("moving_variance"):
            weights[key] = rng.uniform(0.5, 1.5, value.shape).astype(np.float32)
        elif not np.any(value - np.round(value)):  # zeros and ones: biases, gamma, beta, means
            weights[key] = (value + rng.normal(0, 0.1, value.shape)).astype(np.float32)
    return weights


def _input(model, seed: int = 11, batch: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if model.input_dtype == "int32":
        vocab = model.layers[0].attrs["vocab"]
        return rng.integers(0, vocab, size=(batch, *model.input_shape)).astype(np.int32)
    return rng.normal(size=(batch, *model.input_shape)).astype(np.float32)


def _assert_close(actual, expected, what):
    scale = max(float(np.max(np.abs(expected))), 1e-6)
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5 * scale, err_msg=what)


@pytest.mark.parametrize("case", sorted(MODELS))
def test_golden_output(case, update_golden):
    pytest.importorskip("torch")
    pytest.importorskip("jax")
    from safetensors.numpy import load_file, save_file

    model = MODELS[case]
    path = GOLDEN / f"{case}.safetensors"
    if update_golden:
        weights, x = _perturbed_weights(model), _input(model)
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


GRAD_CASES = ["conv_options", "conv_transpose", "pools", "batch_norm", "recurrent", "embedding",
              "activations", "lenet_lenet", "gan_generator", "lstm_lstm"]


@pytest.mark.parametrize("case", GRAD_CASES)
def test_gradient_parity(case):
    """Gradients of a fixed mse loss w.r.t. the canonical weights agree (1e-4)."""
    pytest.importorskip("torch")
    pytest.importorskip("jax")
    from specc.backend import get

    model = MODELS[case]
    weights, x = _perturbed_weights(model), _input(model)
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
    pytest.importorskip("torch" if backend == "torch" else "jax")
    from specc.backend import get

    model = MODELS[case]
    be = get(backend)
    weights = _perturbed_weights(model)
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
