"""The same spec means the same update: both backends' trainers, started from
the same canonical weights and fed the same batches, hold the same weights
after several steps, for every optimiser and schedule (Keras's formulas)."""

from __future__ import annotations

import numpy as np
import pytest

import specc
from specc.ir import Call
from specc.options import OPTIMIZERS
from specc.plan import make_plan

pytest.importorskip("torch")
pytest.importorskip("jax")

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
}
"""

OPTIMISER_CASES = [
    ("sgd", {}), ("sgd", {"momentum": 0.9}), ("sgd", {"momentum": 0.9, "nesterov": True}),
    ("adam", {}), ("adamw", {"weight_decay": 0.1}), ("rmsprop", {}), ("rmsprop", {"momentum": 0.5}),
    ("adagrad", {}),
]
SCHEDULES = [Call("constant", {}), Call("cosine", {"warmup": 2}), Call("step", {"every": 2, "factor": 0.5})]


def _train(backend: str, model, plan, weights, x, y, steps: int):
    """(weights, the pulled training metrics, evaluation on the same data) after `steps` steps."""
    from specc.backend import get

    trainer = get(backend).trainer(model, plan, weights)
    data = trainer.put(x, y)
    order = np.random.default_rng(3).permutation(len(x))
    trainer.begin_epoch(data, order, 0)
    for i in range(steps):
        trainer.step(i)
    return trainer.get_weights(), trainer.pull(), trainer.evaluate(data, 8)


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
