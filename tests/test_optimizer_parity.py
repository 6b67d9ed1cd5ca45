"""The same spec means the same update: both backends' trainers, started from
the same canonical weights and fed the same batches, hold the same weights
and the same canonical optimiser state after several steps, for every
optimiser and schedule (Keras's formulas)."""

from __future__ import annotations

import numpy as np
import pytest

import specc
from specc.ir import Call
from specc.options import OPTIMIZERS
from specc.plan import make_plan, optimizer_state_shapes
from specc.runner import RunError

# A hard import: CI installs .[all,dev], so a missing framework must fail here, not skip.
import jax  # noqa: E402,F401
import torch  # noqa: E402,F401

SPEC = """
model m {
    input [1, 6, 6]
    Conv2D(3, kernel=3, activation=relu)
    BatchNorm()
    Flatten()
    Dense(8, activation=tanh)
    Dense(3, activation=softmax)
}
train m {
    data = synthetic(samples=64, classes=3)
    loss = cross_entropy
    batch = 16
    epochs = 2
    metrics = [accuracy]
}
"""

OPTIMISER_CASES = [
    ("sgd", {}), ("sgd", {"momentum": 0.9}), ("sgd", {"momentum": 0.9, "nesterov": True}),
    ("adam", {}), ("adamw", {"weight_decay": 0.1}), ("rmsprop", {}), ("rmsprop", {"momentum": 0.5}),
    ("adagrad", {}),
]
SCHEDULES = [Call("constant", {}), Call("cosine", {"warmup": 2}), Call("step", {"every": 2, "factor": 0.5})]


def _trainer(backend: str, model, plan, weights, x, y, steps: int):
    from specc.backend import get

    trainer = get(backend).trainer(model, plan, weights)
    data = trainer.put(x, y)
    order = np.random.default_rng(3).permutation(len(x))
    trainer.begin_epoch(data, order, 0)
    for i in range(steps):
        trainer.step(i)
    return trainer, data


def _train(backend: str, model, plan, weights, x, y, steps: int):
    """(weights, the pulled training metrics, evaluation on the same data) after `steps` steps."""
    trainer, data = _trainer(backend, model, plan, weights, x, y, steps)
    return trainer.get_weights(), trainer.pull(), trainer.evaluate(data, 8)


def _assert_close(got: dict, want: dict, what: str, rtol: float = 2e-5) -> None:
    assert got.keys() == want.keys(), what
    for key, value in want.items():
        assert np.shape(got[key]) == np.shape(value), f"{what} {key}"
        scale = max(float(np.max(np.abs(value))), 1e-6)
        np.testing.assert_allclose(got[key], value, rtol=rtol, atol=rtol * scale, err_msg=f"{what} {key}")


@pytest.mark.parametrize("schedule", SCHEDULES, ids=lambda c: c.name)
@pytest.mark.parametrize("name,args", OPTIMISER_CASES, ids=lambda v: str(v))
def test_same_update_on_both_backends(name, args, schedule):
    program = specc.loads(SPEC)
    model = program["m"]
    optimizer = Call(name, {**OPTIMIZERS[name], "lr": 0.05, **args})
    train = program.trains["m"].replace(optimizer=optimizer, schedule=schedule)
    plan = make_plan(model, train, 64, accuracy="categorical")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 1, 6, 6)).astype(np.float32)
    y = rng.integers(0, 3, size=64).astype(np.int32)
    weights = specc.init_weights(model, seed=0)
    on_torch = _train("torch", model, plan, weights, x, y, steps=4)[0]
    on_jax = _train("jax", model, plan, weights, x, y, steps=4)[0]
    for key, value in on_torch.items():
        scale = max(float(np.max(np.abs(value))), 1e-6)
        np.testing.assert_allclose(on_jax[key], value, rtol=2e-5, atol=2e-5 * scale, err_msg=f"{name} {key}")
    moved = sum(not np.array_equal(on_torch[k], weights[k]) for k in weights)
    assert moved == len(weights), "every weight, including the moving statistics, changes in training"


def test_fused_loss_strips_the_same_activation_on_both_backends():
    """The final sigmoid sits before a Reshape: both backends must leave that
    one out of the train forward (Model.final_activation_index) and agree."""
    program = specc.loads("""
model b {
    input [6]
    Dense(5, activation=relu)
    Dense(1, activation=sigmoid)
    Reshape([1])
}
train b {
    data = synthetic(samples=32, classes=2)
    loss = binary_cross_entropy
    optimizer = sgd(lr=0.5)
    batch = 8
}
""")
    model = program["b"]
    plan = make_plan(model, program.trains["b"], 32, accuracy="binary")
    assert plan.fused
    rng = np.random.default_rng(1)
    x = rng.normal(size=(32, 6)).astype(np.float32)
    y = rng.integers(0, 2, size=(32, 1)).astype(np.float32)
    weights = specc.init_weights(model, seed=0)
    on_torch = _train("torch", model, plan, weights, x, y, steps=4)[0]
    on_jax = _train("jax", model, plan, weights, x, y, steps=4)[0]
    for key, value in on_torch.items():
        np.testing.assert_allclose(on_jax[key], value, rtol=2e-5, atol=2e-6, err_msg=key)



def test_sequence_outputs_train_and_score_the_same_on_both_backends():
    """A class per time step: the same updates, and accuracy is the fraction of
    right predictions per sample on both backends (so it stays within [0, 1])."""
    program = specc.loads("""
model s {
    input [5, 3]
    LSTM(6, return_sequences=true)
    Dense(4, activation=softmax)
}
train s {
    data = synthetic(samples=32, classes=4)
    loss = cross_entropy
    optimizer = sgd(lr=0.5)
    batch = 8
    metrics = [accuracy]
}
""")
    model = program["s"]
    plan = make_plan(model, program.trains["s"], 32, accuracy="categorical")
    assert plan.fused
    rng = np.random.default_rng(2)
    x = rng.normal(size=(32, 5, 3)).astype(np.float32)
    y = rng.integers(0, 4, size=(32, 5)).astype(np.int32)  # one class per time step
    weights = specc.init_weights(model, seed=0)
    w_t, m_t, e_t = _train("torch", model, plan, weights, x, y, steps=4)
    w_j, m_j, e_j = _train("jax", model, plan, weights, x, y, steps=4)
    for key, value in w_t.items():
        np.testing.assert_allclose(w_j[key], value, rtol=2e-5, atol=2e-6, err_msg=key)
    assert m_j["samples"] == m_t["samples"] == 32
    assert m_j["loss"] == pytest.approx(m_t["loss"], rel=1e-5)
    assert m_j["accuracy"] == pytest.approx(m_t["accuracy"], abs=1e-6)
    assert 0.0 <= m_j["accuracy"] <= 1.0
    assert e_j["loss"] == pytest.approx(e_t["loss"], rel=1e-5)
    assert e_j["accuracy"] == pytest.approx(e_t["accuracy"], abs=1e-6)


RECURRENT = """
model r {
    input [5, 3]
    LSTM(4, return_sequences=true)
    GRU(4)
    Dense(3, activation=softmax)
}
train r {
    data = synthetic(samples=64, classes=3)
    loss = cross_entropy
    batch = 16
}
"""
STATE_CASES = [("sgd", {"momentum": 0.9}), ("adam", {}), ("adamw", {"weight_decay": 0.1}),
               ("rmsprop", {"momentum": 0.5}), ("adagrad", {})]
SLOTS = {"sgd": {"momentum"}, "adam": {"m", "v"}, "adamw": {"m", "v"}, "rmsprop": {"velocity", "momentum"},
         "adagrad": {"accumulator"}}


def _state_setup(text: str, name: str, args: dict):
    program = specc.loads(text)
    (model_name,) = program.trains
    model = program[model_name]
    train = program.trains[model_name].replace(optimizer=Call(name, {**OPTIMIZERS[name], "lr": 0.05, **args}),
                                               schedule=Call("cosine", {"warmup": 2}))
    plan = make_plan(model, train, 64)
    rng = np.random.default_rng(4)
    x = rng.normal(size=(64, *model.input_shape)).astype(np.float32)
    y = rng.integers(0, 3, size=64).astype(np.int32)
    return model, plan, specc.init_weights(model, seed=0), x, y


@pytest.mark.parametrize("text", [SPEC, RECURRENT], ids=["conv-batchnorm-dense", "lstm-gru"])
@pytest.mark.parametrize("name,args", STATE_CASES, ids=lambda v: str(v))
def test_canonical_optimizer_state_is_the_same_on_both_backends(text, name, args):
    """Keys "<opt>/<slot>/<weight key>" in the weights' canonical layouts (the
    torch side converts OIHW, [out, in] and the gate orders; the Flax side only
    renames): the two trainers' states after the same steps agree, which
    checks both conversions independently."""
    model, plan, weights, x, y = _state_setup(text, name, args)
    on_torch = _trainer("torch", model, plan, weights, x, y, steps=3)[0]
    on_jax = _trainer("jax", model, plan, weights, x, y, steps=3)[0]
    state_t, state_j = on_torch.get_optimizer_state(), on_jax.get_optimizer_state()
    assert {k: v.shape for k, v in state_j.items()} == optimizer_state_shapes(model, plan.optimizer)
    assert {k.split("/")[1] for k in state_j if k != f"{name}/step"} == SLOTS[name]
    assert int(state_j[f"{name}/step"]) == int(state_t[f"{name}/step"]) == 3
    # float32 round-off between the frameworks reaches ~1e-5 (v squares the
    # gradients' own); a wrong layout or gate order would be off by O(1).
    _assert_close(state_j, state_t, f"{name} state", rtol=3e-5)
    assert any(np.any(v != 0) for k, v in state_t.items() if k != f"{name}/step")

    # Each backend takes the other's state, and gives it back exactly.
    on_torch.set_optimizer_state(state_j)
    on_jax.set_optimizer_state(state_t)
    for got, want in ((on_torch.get_optimizer_state(), state_j), (on_jax.get_optimizer_state(), state_t)):
        assert got.keys() == want.keys()
        for key in want:
            np.testing.assert_array_equal(got[key], want[key], err_msg=key)


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_optimizer_state_that_does_not_fit_is_refused_naming_the_key(backend):
    from specc.backend import get

    model, plan, weights, _, _ = _state_setup(SPEC, "adam", {})
    trainer = get(backend).trainer(model, plan, weights)
    state = trainer.get_optimizer_state()
    missing = {k: v for k, v in state.items() if k != "adam/v/dense_1/kernel"}
    with pytest.raises(RunError, match="adam/v/dense_1/kernel"):
        trainer.set_optimizer_state(missing)
    misshapen = {**state, "adam/m/conv2d_1/kernel": np.zeros((3, 1, 3, 3), np.float32)}
    with pytest.raises(RunError, match=r"adam/m/conv2d_1/kernel has shape \[3, 1, 3, 3\], expected \[3, 3, 1, 3\]"):
        trainer.set_optimizer_state(misshapen)
    other = {k.replace("adam/", "adamw/", 1): v for k, v in state.items()}
    with pytest.raises(RunError, match="adamw/.* not adam's state"):
        trainer.set_optimizer_state(other)
