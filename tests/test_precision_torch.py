"""The PyTorch trainers' speed settings and precision (issue 13, items 3 and 6).

- channels_last (on by default, `--no-channels-last` turns it off) is wired
  into the supervised and GAN trainers: weights, stored splits, gathered
  batches and optimiser state (restored state too) in channels-last memory;
  runs through `train_model` with and without it agree within the tolerances
  of tests/test_speed_settings.py, and with it off an f32 step is exactly the
  plain loop's (the wiring adds nothing).
- torch.compile is not combined with DDP, and the GAN runs eagerly; both say so.
- `--precision mixed`: matmuls and convolutions in bf16 (autocast), the
  parameters, gradients, optimiser state, BatchNorm statistics and loss in
  float32; two short epochs on MNIST reach f32's accuracy within a few
  points; a run's result.json says "mixed" and its checkpoints resume
  exactly; the GAN trains too.
"""

from __future__ import annotations

import json
import textwrap
from dataclasses import replace

import numpy as np
import pytest

import torch  # noqa: E402 - CI installs .[all,dev]: a missing torch must fail, not skip

import specc  # noqa: E402
from specc import backend as registry  # noqa: E402
from specc.distributed import World  # noqa: E402
from specc.ir import Call, Train  # noqa: E402
from specc.options import OPTIMIZERS  # noqa: E402
from specc.plan import SpeedChoices, make_plan  # noqa: E402
from specc.runner import Options, train_model  # noqa: E402
from specc.weights import init_weights  # noqa: E402

from specc.backends.pytorch import train as torch_train  # noqa: E402
from training_specs import GAN_PAIR as GAN, MNIST_CNN_OF, SMALL_CNN as CONV, cut_and_resume  # noqa: E402

P = registry.get("torch")

MNIST_CNN = MNIST_CNN_OF.format(conv1=4, conv2=8, batch=32)

RTOL, ATOL = 1e-5, 1e-6  # tests/test_speed_settings.py's for channels_last


def write(tmp_path, text: str, name: str = "m.spec") -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return str(path)


def run(spec: str, out, **kw):
    return train_model(spec, None, Options(backend="torch", quiet=True, out=str(out), **kw))


def conv_model_and_plan(precision: str = "f32", channels_last: bool = True, compile: bool = False,
                        samples: int = 128):
    program = specc.loads(CONV.format(epochs=1))
    model, train = program["m"], program.trains["m"]
    plan = make_plan(model, train, samples, "categorical")
    return model, replace(plan, precision=precision, speed=SpeedChoices(channels_last=channels_last, compile=compile))


def data(model, n: int = 128, seed: int = 0):
    rng = np.random.default_rng(seed)
    return rng.random((n, *model.input_shape)).astype(np.float32), rng.integers(0, 5, n)


def train_steps(trainer, x, y, epochs: int = 1):
    split = trainer.put(x, y)
    for epoch in range(epochs):
        trainer.begin_epoch(split, np.random.default_rng(epoch).permutation(len(x)), epoch)
        for i in range(trainer.plan.steps_per_epoch):
            trainer.step(i)
    return split, trainer.pull()


def assert_close(a: dict, b: dict, rtol=RTOL, atol=ATOL):
    assert set(a) == set(b)
    for key in a:
        np.testing.assert_allclose(a[key], b[key], rtol=rtol, atol=atol, err_msg=key)


# ---------------------------------------------------------------- channels_last in the trainer


def test_channels_last_is_applied_to_weights_splits_batches_and_optimizer_state():
    model, plan = conv_model_and_plan()
    trainer = P.trainer(model, plan, init_weights(model, 0))
    fmt = torch.channels_last
    convs = [p for p in trainer.net.parameters() if p.dim() == 4]
    assert convs and all(p.is_contiguous(memory_format=fmt) for p in convs)
    x, y = data(model)
    split, metrics = train_steps(trainer, x, y)
    assert np.isfinite(metrics["loss"])
    assert split.x.is_contiguous(memory_format=fmt) and not split.x.is_contiguous()
    assert trainer.speed.gather(split.x, torch.tensor([3, 1])).is_contiguous(memory_format=fmt)
    for p in convs:  # Adam's slots follow the weights (made after channels_last)
        assert all(s.is_contiguous(memory_format=fmt) for s in trainer.optimizer.state[p].values() if s.dim() == 4)
    # restored optimiser state (canonical numpy: channels-first) is put back in the weights' format
    state = trainer.get_optimizer_state()
    fresh = P.trainer(model, plan, trainer.get_weights())
    fresh.set_optimizer_state(state)
    for p in [p for p in fresh.net.parameters() if p.dim() == 4]:
        slots = [s for s in fresh.optimizer.state[p].values() if s.dim() == 4]
        assert slots and all(s.is_contiguous(memory_format=fmt) for s in slots)
    assert_close(fresh.get_optimizer_state(), state, rtol=0, atol=0)
    assert "channels_last on" in trainer.describe_speed() and "precision f32" in trainer.describe_speed()


def test_channels_last_off_leaves_everything_channels_first():
    model, plan = conv_model_and_plan(channels_last=False)
    trainer = P.trainer(model, plan, init_weights(model, 0))
    assert all(p.is_contiguous() for p in trainer.net.parameters())
    split = trainer.put(*data(model))
    assert split.x.is_contiguous()
    assert "channels_last off" in trainer.describe_speed()


def test_f32_step_without_speed_settings_is_the_plain_loop_exactly():
    """With channels_last off, Trainer.step in f32 is bit for bit the plain
    loop (index_select, forward, loss, Adam): the wiring adds no arithmetic."""
    program = specc.loads(CONV.format(epochs=1).replace("    Dropout(0.2)\n", ""))
    model, train = program["m"], program.trains["m"]
    plan = replace(make_plan(model, train, 128, "categorical"), speed=SpeedChoices(channels_last=False))
    x, y = data(model)
    stepped = P.trainer(model, plan, init_weights(model, 0))
    train_steps(stepped, x, y)
    plain = P.trainer(model, plan, init_weights(model, 0))
    split = plain.put(x, y)
    order = torch.from_numpy(np.random.default_rng(0).permutation(128))
    for i in range(plan.steps_per_epoch):
        idx = order[i * 32:(i + 1) * 32]
        loss = plain._loss_fn(plain.net(split.x.index_select(0, idx)), split.y.index_select(0, idx))
        plain.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        plain.update.prepare(plan.lr, plain.updates + 1)
        plain.optimizer.step()
        plain.updates += 1
    a, b = stepped.get_weights(), plain.get_weights()
    for key in a:
        assert np.array_equal(a[key], b[key]), key


def test_runner_with_and_without_channels_last_agrees(tmp_path):
    spec = write(tmp_path, CONV.format(epochs=2))
    default = run(spec, tmp_path / "default", limit=256)
    plain = run(spec, tmp_path / "plain", limit=256, speed=SpeedChoices(channels_last=False))
    assert default.result["train_samples"] == plain.result["train_samples"]
    assert_close(default.weights, plain.weights)
    for a, b in zip(default.history, plain.history):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
    assert default.result["test_loss"] == pytest.approx(plain.result["test_loss"], rel=1e-5)


def test_compile_is_not_combined_with_ddp():
    model, plan = conv_model_and_plan(compile=True)
    net = P.build(model)
    speed = torch_train.make_speed(net, plan, World(devices=2, processes=2, rank=0))
    assert speed.compiled is None and speed.channels_last
    assert "not combined with data parallelism" in speed.describe()


# ---------------------------------------------------------------- mixed precision


def test_mixed_computes_in_bf16_and_keeps_float32_state():
    model, plan = conv_model_and_plan(precision="mixed")
    trainer = P.trainer(model, plan, init_weights(model, 0))
    seen = {}
    modules = dict(trainer.net.named_modules())
    conv, bn = (next(m for m in modules.values() if type(m).__name__ == kind) for kind in ("Conv2D", "BatchNorm"))

    def conv_out(module, args, out):
        seen.setdefault("conv", out.dtype)

    def bn_in(module, args, out):
        seen.setdefault("bn_in", args[0].dtype)

    conv.register_forward_hook(conv_out)
    bn.register_forward_hook(bn_in)
    x, y = data(model)
    _, metrics = train_steps(trainer, x, y)
    assert seen == {"conv": torch.bfloat16, "bn_in": torch.float32}
    assert np.isfinite(metrics["loss"])
    assert {p.dtype for p in trainer.net.parameters()} == {torch.float32}
    assert {b.dtype for b in trainer.net.buffers()} == {torch.float32}
    assert {p.grad.dtype for p in trainer.net.parameters() if p.grad is not None} == {torch.float32}
    assert {s.dtype for st in trainer.optimizer.state.values() for s in st.values() if s.dim()} == {torch.float32}
    assert trainer._losses.dtype == torch.float32
    assert "precision mixed" in trainer.describe_speed()
    result = trainer.evaluate(trainer.put(x, y), 50)  # the eval forward under autocast too
    assert np.isfinite(result["loss"]) and 0.0 <= result["accuracy"] <= 1.0


def test_mixed_is_close_to_f32_after_a_few_steps():
    x, y = data(conv_model_and_plan()[0])
    weights = {}
    for precision in ("f32", "mixed"):
        model, plan = conv_model_and_plan(precision=precision)
        trainer = P.trainer(model, plan, init_weights(model, 0))
        train_steps(trainer, x, y)
        weights[precision] = trainer.get_weights()
    changed = 0
    for key, w in weights["f32"].items():  # bf16 rounding moves the weights a little, not a lot
        assert weights["mixed"][key].dtype == np.float32
        np.testing.assert_allclose(weights["mixed"][key], w, atol=0.05, err_msg=key)
        changed += not np.array_equal(weights["mixed"][key], w)
    assert changed  # it did compute in another precision


def test_unknown_precision_is_refused():
    model, plan = conv_model_and_plan(precision="f16")
    with pytest.raises(Exception, match="precision 'f16'"):
        P.trainer(model, plan, init_weights(model, 0))


def test_mixed_mnist_training_reaches_f32_accuracy():
    """Two epochs on 2,000 MNIST digits (the copy shipped with the package),
    f32 and mixed from the same weights and order, scored on 2,000 test digits."""
    from specc.data import load_dataset
    from specc.runner import accuracy_kind

    program = specc.loads(MNIST_CNN)
    model, train = program["cnn"], program.trains["cnn"]
    data = load_dataset(train.data, model.input_shape, limit=2000)
    x_test, y_test = data.x_test[:2000], data.y_test[:2000]
    plan = make_plan(model, train, len(data.x_train), accuracy_kind(model, train, y_test))
    scores = {}
    for precision in ("f32", "mixed"):
        trainer = P.trainer(model, replace(plan, precision=precision), init_weights(model, 0))
        split = trainer.put(data.x_train, data.y_train)
        for epoch in range(plan.epochs):
            trainer.begin_epoch(split, np.random.default_rng(epoch).permutation(len(data.x_train)), epoch)
            for i in range(plan.steps_per_epoch):
                trainer.step(i)
            assert np.isfinite(trainer.pull()["loss"])
        scores[precision] = trainer.evaluate(trainer.put(x_test, y_test), 500)["accuracy"]
        assert {w.dtype for w in trainer.get_weights().values()} == {np.dtype(np.float32)}
    assert scores["f32"] > 0.75, scores  # it learned (84% here)
    assert abs(scores["mixed"] - scores["f32"]) < 0.05, scores  # within a few points (1 here)


def test_mixed_resume_is_bit_identical(tmp_path):
    spec = write(tmp_path, CONV.format(epochs=3))
    whole = run(spec, tmp_path / "whole", limit=192, precision="mixed")
    resumed, cut_epoch = cut_and_resume(spec, tmp_path / "cut", "torch", 192, precision="mixed")
    assert cut_epoch == 0
    assert resumed.result["epochs"] == 3 and resumed.result["precision"] == "mixed"
    assert json.loads((tmp_path / "cut" / "result.json").read_text())["precision"] == "mixed"
    assert {w.dtype for w in resumed.weights.values()} == {np.dtype(np.float32)}
    for key in whole.weights:
        assert np.array_equal(whole.weights[key], resumed.weights[key]), key
    assert [r["loss"] for r in whole.history] == [r["loss"] for r in resumed.history]


def test_torch_declares_mixed():  # the runner refuses --precision mixed on a backend that does not
    assert P.PRECISIONS == ("f32", "mixed")


# ---------------------------------------------------------------- the GAN trainer


def gan_trainer(precision: str = "f32", channels_last: bool = True, compile: bool = False):
    program = specc.loads(GAN)
    generator, discriminator = program["gen"], program["disc"]
    optimizer = Call("adam", {**OPTIMIZERS["adam"], "lr": 2e-4, "beta1": 0.5})
    train = Train(model="gen", data=Call("mnist", {}), loss="binary_cross_entropy", optimizer=optimizer,
                  batch=16, epochs=1, seed=3)
    plan = replace(make_plan(generator, train, 48), precision=precision,
                   speed=SpeedChoices(channels_last=channels_last, compile=compile))
    return P.gan_trainer(generator, discriminator, plan, init_weights(generator, 1), init_weights(discriminator, 2), 8)


def gan_steps(trainer, n: int = 48):
    images = np.tanh(np.random.default_rng(0).normal(size=(n, 1, 8, 8))).astype(np.float32)
    real = trainer.put(images)
    trainer.begin_epoch(real, np.random.default_rng(1).permutation(n), 0)
    for i in range(trainer.plan.steps_per_epoch):
        trainer.step(i)
    return real, trainer.pull()


def test_gan_channels_last_agrees_and_runs_eagerly():
    plain = gan_trainer(channels_last=False)
    gan_steps(plain)
    fast = gan_trainer(compile=True)
    real, metrics = gan_steps(fast)
    assert real.is_contiguous(memory_format=torch.channels_last)
    assert np.isfinite(metrics["d_loss"]) and np.isfinite(metrics["g_loss"])
    text = fast.describe_speed()
    assert "channels_last on" in text and "GAN trainer runs eagerly" in text
    a, b = fast.get_weights(), plain.get_weights()
    for role in a:
        assert_close(a[role], b[role], rtol=1e-4, atol=1e-5)


def test_gan_mixed_trains_with_float32_state():
    f32, mixed = gan_trainer(), gan_trainer(precision="mixed")
    _, m32 = gan_steps(f32)
    _, mm = gan_steps(mixed)
    assert all(np.isfinite(mm[k]) for k in ("d_loss", "g_loss", "d_real", "d_fake"))
    assert mm["d_loss"] == pytest.approx(m32["d_loss"], abs=0.05)
    for side in mixed.sides.values():
        assert {p.dtype for p in side.net.parameters()} == {torch.float32}
        assert {s.dtype for st in side.optimizer.state.values() for s in st.values() if s.dim()} == {torch.float32}
    images = mixed.generate(np.random.default_rng(2).normal(size=(5, 8)).astype(np.float32))
    assert images.dtype == np.float32 and images.shape == (5, 1, 8, 8) and np.isfinite(images).all()
    # a checkpoint's groups round-trip
    again = gan_trainer(precision="mixed")
    again.set_weights(mixed.get_weights())
    again.set_optimizer_state(mixed.get_optimizer_state())
    assert again.steps == mixed.steps

