"""The PyTorch trainer: the runner end to end, resume, the NaN guard, and the
optimisers and schedules against numpy transcriptions of Keras's update
formulas (keras/src/optimizers, Keras 3)."""

from __future__ import annotations

import json
import math
import textwrap

import numpy as np
import pytest

# A hard import: CI installs .[all,dev], so a missing framework must fail here, not skip.
import torch  # noqa: E402

import specc  # noqa: E402
from specc import backend as registry  # noqa: E402
from specc.plan import learning_rate, make_plan, optimizer_state_shapes  # noqa: E402
from specc.runner import Interrupted, Options, RunError, accuracy_kind, prepare_targets, train_model  # noqa: E402
from specc.weights import init_weights, load_weights  # noqa: E402

P = registry.get("torch")

MLP = """
model tiny {{
    input [12]
    Dense(24, activation=relu)
    BatchNorm()
    Dropout(0.25)
    Dense(4, activation=softmax)
}}
train tiny {{
    data      = synthetic(samples=256, classes=4, test_samples=64, validation_split=0.25)
    loss      = cross_entropy
    optimizer = {optimizer}
    schedule  = {schedule}
    batch     = 32
    epochs    = {epochs}
    metrics   = [accuracy]
    seed      = 3
}}
"""


def write_spec(tmp_path, optimizer="adam(lr=1e-2)", schedule="constant", epochs=3, text=None, name="m.spec"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text) if text else MLP.format(optimizer=optimizer, schedule=schedule,
                                                                  epochs=epochs))
    return str(path)


def run(spec, out, **kw):
    return train_model(spec, None, Options(backend="torch", quiet=True, out=str(out), **kw))


# ---------------------------------------------------------------- the runner end to end


def test_loss_falls_and_run_directory_is_complete(tmp_path):
    spec = write_spec(tmp_path, epochs=4)
    res = run(spec, tmp_path / "run")
    d = res.run_dir
    rows = [json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4]
    assert rows[-1]["loss"] < 0.8 * rows[0]["loss"]
    assert rows[-1]["accuracy"] > rows[0]["accuracy"]
    assert all({"val_loss", "val_accuracy", "seconds", "samples_per_second"} <= set(r) for r in rows)
    result = json.loads((d / "result.json").read_text())
    for key in ("backend", "model", "params", "epochs", "test_accuracy", "test_loss", "train_seconds",
                "train_samples_per_second"):
        assert key in result, key
    assert result["backend"] == "torch" and result["model"] == "tiny" and result["epochs"] == 4
    assert result["params"] == (12 * 24 + 24) + 4 * 24 + (24 * 4 + 4)  # Dense, BatchNorm, Dense: 508
    assert 0.0 <= result["test_accuracy"] <= 1.0 and math.isfinite(result["test_loss"])
    assert (d / "summary.txt").read_text().strip()
    weights = load_weights(d / "weights.safetensors")
    assert set(weights) == set(res.weights)
    assert all(np.array_equal(weights[k], res.weights[k]) for k in weights)
    assert (d / "curves.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")  # matplotlib is in .[all]


@pytest.mark.parametrize("optimizer,schedule", [
    ("adam(lr=1e-2)", "cosine(warmup=3)"),
    ("sgd(lr=0.05, momentum=0.9, nesterov=true)", "step(every=5, factor=0.5)"),
    ("rmsprop(lr=1e-3, momentum=0.5)", "constant"),
])
def test_resume_is_bit_identical(tmp_path, optimizer, schedule):
    spec = write_spec(tmp_path, optimizer=optimizer, schedule=schedule, epochs=3)
    whole = run(spec, tmp_path / "whole")

    def stop(epoch, row):
        if epoch == 0:
            raise KeyboardInterrupt

    with pytest.raises(Interrupted, match="--resume"):
        train_model(spec, None, Options(backend="torch", quiet=True, out=str(tmp_path / "cut")), on_epoch_end=stop)
    assert json.loads((tmp_path / "cut" / "checkpoint.json").read_text())["epoch"] == 0
    resumed = train_model(spec, None, Options(backend="torch", quiet=True, resume=str(tmp_path / "cut")))
    assert resumed.result["epochs"] == 3
    assert set(whole.weights) == set(resumed.weights)
    for key in whole.weights:
        assert np.array_equal(whole.weights[key], resumed.weights[key]), key
    assert [r["loss"] for r in whole.history] == [r["loss"] for r in resumed.history]


NAN_SPEC = """
model reg {{
    input [8]
    Dense(16, activation=relu)
    Dense(3)
}}
train reg {{
    data      = synthetic(samples=128, classes=3, test_samples=32)
    loss      = mse
    optimizer = sgd(lr={lr})
    schedule  = {schedule}
    batch     = 32
    epochs    = 3
}}
"""


def test_nan_guard_stops_in_the_first_epoch(tmp_path):
    spec = write_spec(tmp_path, text=NAN_SPEC.format(lr="1e30", schedule="constant"))
    pattern = r"loss became (nan|inf) at epoch 1, step \d+ \(global step \d+\).*no epoch completed"
    with pytest.raises(RunError, match=pattern):
        run(spec, tmp_path / "run")
    assert not (tmp_path / "run" / "checkpoint.json").exists()
    assert not (tmp_path / "run" / "result.json").exists()


def test_nan_guard_keeps_the_last_good_checkpoint(tmp_path):
    # 4 steps per epoch; the learning rate jumps by 1e32 at the start of epoch 2.
    spec = write_spec(tmp_path, text=NAN_SPEC.format(lr="0.01", schedule="step(every=4, factor=1e32)"))
    with pytest.raises(RunError) as info:
        run(spec, tmp_path / "run")
    message = str(info.value)
    assert "at epoch 2, step " in message and f"checkpoint (epoch 1) is kept in {tmp_path / 'run'}" in message
    pointer = json.loads((tmp_path / "run" / "checkpoint.json").read_text())
    assert pointer == {"latest": "checkpoint-0001", "epoch": 0}
    saved = load_weights(tmp_path / "run" / "checkpoint-0001" / "weights.safetensors")
    assert all(np.isfinite(v).all() for v in saved.values())
    assert not (tmp_path / "run" / "result.json").exists()


# ---------------------------------------------------------------- the trainer directly

DENSE = """
model d {{
    input [5]
    Dense(3)
}}
train d {{
    data      = synthetic(samples=16, classes=3)
    loss      = mse
    optimizer = {optimizer}
    schedule  = {schedule}
    batch     = 16
    epochs    = 4
}}
"""


def dense_setup(optimizer, schedule="constant", text=DENSE, samples=16):
    program = specc.loads(text.format(optimizer=optimizer, schedule=schedule))
    (name,) = program.trains
    model, train = program.models[name], program.trains[name]
    rng = np.random.default_rng(0)
    x = rng.standard_normal((samples, *model.input_shape)).astype(np.float32)
    y = rng.standard_normal((samples, *model.output_shape)).astype(np.float32)
    plan = make_plan(model, train, samples)
    weights = init_weights(model, 1)
    return model, plan, weights, x, y


def keras_updates(name, args, lrs, kernel, bias, x, y):
    """Keras's update formulas (float64) for a linear Dense trained with mse on
    the full batch: one update per entry of `lrs`."""
    params = [kernel.astype(np.float64), bias.astype(np.float64)]
    x, y = x.astype(np.float64), y.astype(np.float64)
    slots = [dict(m=np.zeros_like(p), v=np.zeros_like(p), acc=np.full_like(p, args.get("initial_accumulator", 0)))
             for p in params]
    for t, lr in enumerate(lrs, start=1):
        d = 2.0 * (x @ params[0] + params[1] - y) / y.size
        grads = [x.T @ d, d.sum(axis=0)]
        for p, g, s in zip(params, grads, slots):
            if name == "sgd":
                if args["momentum"]:
                    s["m"][...] = s["m"] * args["momentum"] - g * lr
                    p += s["m"] * args["momentum"] - g * lr if args["nesterov"] else s["m"]
                else:
                    p -= lr * g
            elif name in ("adam", "adamw"):
                if name == "adamw":
                    p -= p * args["weight_decay"] * lr
                b1, b2 = args["beta1"], args["beta2"]
                alpha = lr * math.sqrt(1 - b2**t) / (1 - b1**t)
                s["m"] += (g - s["m"]) * (1 - b1)
                s["v"] += (g * g - s["v"]) * (1 - b2)
                p -= s["m"] * alpha / (np.sqrt(s["v"]) + args["epsilon"])
            elif name == "rmsprop":
                s["v"][...] = args["rho"] * s["v"] + (1 - args["rho"]) * g * g
                inc = lr * g / np.sqrt(s["v"] + args["epsilon"])
                if args["momentum"]:
                    s["m"][...] = args["momentum"] * s["m"] + inc
                    p -= s["m"]
                else:
                    p -= inc
            elif name == "adagrad":
                s["acc"] += g * g
                p -= lr * g / np.sqrt(s["acc"] + args["epsilon"])
    return params


OPTIMIZERS = [
    "sgd(lr=0.1)",
    "sgd(lr=0.1, momentum=0.9)",
    "sgd(lr=0.1, momentum=0.8, nesterov=true)",
    "adam(lr=0.01)",
    "adam(lr=0.01, beta1=0.5, beta2=0.9, epsilon=1e-3)",
    "adamw(lr=0.01, weight_decay=0.1)",
    "rmsprop(lr=0.01)",
    "rmsprop(lr=0.01, rho=0.8, momentum=0.5, epsilon=1e-4)",
    "adagrad(lr=0.1)",
    "adagrad(lr=0.1, initial_accumulator=0.5, epsilon=1e-3)",
]


def train_steps(trainer, data, plan, steps):
    for epoch in range(steps):
        trainer.begin_epoch(data, np.arange(len(data), dtype=np.int64), epoch)
        for i in range(plan.steps_per_epoch):
            trainer.step(i)


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_updates_match_keras(optimizer):
    # A step schedule halves the lr every step, so updates that keep lr in a
    # velocity (Keras SGD and RMSprop momentum) are told apart from torch's.
    model, plan, weights, x, y = dense_setup(optimizer, schedule="step(every=1, factor=0.5)")
    trainer = P.trainer(model, plan, weights)
    data = trainer.put(x, y)
    first = None
    for step in range(3):
        trainer.begin_epoch(data, np.arange(len(x)), step)
        trainer.step(0)
        got = trainer.get_weights()
        lrs = [plan.lr * 0.5**s for s in range(step + 1)]  # step(every=1, factor=0.5), written out
        kernel, bias = keras_updates(plan.optimizer.name, dict(plan.optimizer.args), lrs,
                                     weights["dense_1/kernel"], weights["dense_1/bias"], x, y)
        np.testing.assert_allclose(got["dense_1/kernel"], kernel, rtol=2e-5, atol=1e-6)
        np.testing.assert_allclose(got["dense_1/bias"], bias, rtol=2e-5, atol=1e-6)
        first = first or got
    assert not np.array_equal(first["dense_1/kernel"], weights["dense_1/kernel"])


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_optimizer_state_round_trip_is_exact(optimizer):
    model, plan, weights, x, y = dense_setup(optimizer, schedule="cosine(warmup=2)")
    a = P.trainer(model, plan, weights)
    data = a.put(x, y)
    train_steps(a, data, plan, 2)
    state = a.get_optimizer_state()
    assert all(isinstance(v, np.ndarray) for v in state.values())
    assert int(state[f"{plan.optimizer.name}/step"]) == 2
    assert {k: v.shape for k, v in state.items()} == optimizer_state_shapes(model, plan.optimizer)
    b = P.trainer(model, plan, a.get_weights())
    b.set_optimizer_state(state)
    for trainer in (a, b):
        d = trainer.put(x, y)
        for epoch in (2, 3):
            trainer.begin_epoch(d, np.arange(len(x)), epoch)
            trainer.step(0)
    wa, wb = a.get_weights(), b.get_weights()
    assert all(np.array_equal(wa[k], wb[k]) for k in wa)
    sa, sb = a.get_optimizer_state(), b.get_optimizer_state()
    assert sa.keys() == sb.keys() and all(np.array_equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("schedule,expected", [
    ("constant", lambda s: 0.1),
    ("step(every=3, factor=0.5)", lambda s: 0.1 * 0.5 ** (s // 3)),
    ("cosine(warmup=2)", lambda s: 0.1 * (s + 1) / 2 if s < 2 else 0.1 * 0.5 * (1 + math.cos(math.pi * (s - 2) / 6))),
])
def test_learning_rate_is_set_per_step(schedule, expected):
    # 32 samples in batches of 16 over 4 epochs: 8 steps, so cosine decays over 6 after warm-up.
    model, plan, weights, x, y = dense_setup("sgd(lr=0.1)", schedule=schedule, samples=32)
    assert plan.steps_per_epoch == 2 and plan.total_steps == 8
    trainer = P.trainer(model, plan, weights)
    data = trainer.put(x, y)
    seen = []
    for epoch in range(plan.epochs):
        trainer.begin_epoch(data, np.arange(32), epoch)
        for i in range(plan.steps_per_epoch):
            trainer.step(i)
            seen.append(trainer.optimizer.param_groups[0]["lr"])
    assert seen == pytest.approx([expected(s) for s in range(8)], rel=1e-12)
    assert seen == [learning_rate(plan, s) for s in range(8)]


def test_pull_and_evaluate_agree_with_the_inference_model():
    text = MLP.format(optimizer="adam(lr=1e-2)", schedule="constant", epochs=1)
    model = specc.loads(text).models["tiny"]
    train = specc.loads(text).trains["tiny"]
    rng = np.random.default_rng(1)
    x = rng.standard_normal((70, 12)).astype(np.float32)
    y = rng.integers(0, 4, 70)
    plan = make_plan(model, train, 70, accuracy_kind(model, train, y))
    assert plan.fused and plan.accuracy == "categorical" and plan.steps_per_epoch == 3
    trainer = P.trainer(model, plan, init_weights(model, 0))
    data = trainer.put(x, prepare_targets(model, train, y))
    trainer.begin_epoch(data, np.arange(70), 0)
    trainer.step(0)
    m = trainer.pull()
    assert m["samples"] == 32 and m["bad_step"] == -1 and 0 <= m["accuracy"] <= 1
    trainer.step(1)
    trainer.step(2)  # the partial last batch: 6 samples
    m = trainer.pull()
    assert m["samples"] == 38
    assert trainer.pull()["samples"] == 0
    # Steps never pulled before the next epoch begins are carried over.
    trainer.begin_epoch(data, np.arange(70), 1)
    trainer.step(0)
    trainer.begin_epoch(data, np.arange(70)[::-1].copy(), 2)
    trainer.step(0)
    trainer.step(1)
    assert trainer.pull()["samples"] == 96
    # Evaluation runs on logits with the fused loss; the model's inference
    # output (softmax probabilities) gives the same loss and accuracy.
    result = trainer.evaluate(data, 32)
    probs = P.run(model, trainer.get_weights(), x).astype(np.float64)
    assert result["loss"] == pytest.approx(-np.log(probs[np.arange(70), y]).mean(), rel=1e-5)
    assert result["accuracy"] == pytest.approx((probs.argmax(1) == y).mean())


BCE = """
model b {
    input [6]
    Dense(8, activation=tanh)
    Dense(1, activation=sigmoid)
}
train b {
    data = synthetic(samples=64, classes=2)
    loss = binary_cross_entropy
    optimizer = adam(lr=0.05)
    batch = 16
    epochs = 5
    metrics = [accuracy]
}
"""

ONEHOT = """
model o {
    input [6]
    Dense(3, activation=softmax)
}
train o {
    data = synthetic(samples=64, classes=3)
    loss = mse
    optimizer = sgd(lr=0.5)
    batch = 16
    epochs = 5
    metrics = [accuracy]
}
"""

TOKENS = """
model t {
    input [7] int
    Embedding(10, 4)
    Flatten()
    Dense(3, activation=softmax)
}
train t {
    data = synthetic(samples=64, classes=3)
    loss = cross_entropy
    optimizer = adam(lr=0.05)
    batch = 16
    epochs = 5
    metrics = [accuracy]
}
"""


@pytest.mark.parametrize("text,kind", [(BCE, "binary"), (ONEHOT, "onehot"), (TOKENS, "categorical")])
def test_other_losses_targets_and_inputs_train(tmp_path, text, kind):
    spec = write_spec(tmp_path, text=text)
    res = run(spec, tmp_path / "run")
    rows = res.history
    assert rows[-1]["loss"] < rows[0]["loss"]
    assert res.result["test_accuracy"] is not None and 0 <= res.result["test_accuracy"] <= 1


def test_dropout_masks_follow_seed_and_epoch():
    text = MLP.format(optimizer="sgd(lr=1e-9)", schedule="constant", epochs=1)
    model, train = specc.loads(text).models["tiny"], specc.loads(text).trains["tiny"]
    plan = make_plan(model, train, 32)
    x = np.random.default_rng(0).standard_normal((32, 12)).astype(np.float32)
    y = np.zeros(32, dtype=np.int64)

    def losses(epoch, seed=train.seed):
        p = plan if seed == train.seed else make_plan(model, train.replace(seed=seed), 32)
        t = P.trainer(model, p, init_weights(model, 0))
        data = t.put(x, y)
        t.begin_epoch(data, np.arange(32), epoch)
        t.step(0)
        return t.pull()["loss"]

    first = losses(0)
    assert losses(0) == first  # a second trainer draws the same masks
    assert losses(1) != first  # another epoch, other masks
    assert losses(0, seed=train.seed + 1) != first  # another seed, other masks


def test_batchnorm_moving_statistics_update_in_training():
    text = MLP.format(optimizer="adam(lr=1e-3)", schedule="constant", epochs=1)
    model, train = specc.loads(text).models["tiny"], specc.loads(text).trains["tiny"]
    plan = make_plan(model, train, 32)
    w0 = init_weights(model, 0)
    t = P.trainer(model, plan, w0)
    data = t.put(np.random.default_rng(0).standard_normal((32, 12)).astype(np.float32), np.zeros(32, np.int64))
    t.begin_epoch(data, np.arange(32), 0)
    t.step(0)
    w1 = t.get_weights()
    key = next(k for k in w1 if k.endswith("moving_mean"))
    assert not np.array_equal(w0[key], w1[key])
    before = t.get_weights()
    t.evaluate(data, 16)  # inference mode leaves them alone
    after = t.get_weights()
    assert all(np.array_equal(before[k], after[k]) for k in before)


def test_gpu_without_cuda_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip("a GPU is visible")
    model, plan, weights, *_ = dense_setup("sgd(lr=0.1)")
    with pytest.raises(specc.BackendError, match="no GPU is visible to torch"):
        P.trainer(model, plan, weights, device="gpu")
