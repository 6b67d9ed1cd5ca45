"""The JAX trainers' precision and XLA options (issue 13, items 2 and 6).

- `--precision mixed`: the train and eval steps compute every convolution and
  matmul (forward and backward) in bfloat16, checked on the lowered step so a
  mixed run that silently computed in f32 fails here; parameters, gradients,
  optimiser state and BatchNorm statistics stay float32, BatchNorm normalises
  in float32 and the loss is on float32 outputs; a short MNIST run reaches
  f32's accuracy within a few points; result.json says "mixed"; a mixed run
  resumes exactly; the GAN trains too.
- "f32" lowers to a step without a single bf16 value (the default is unchanged).
- The trainers jit their steps with specc's XLA options (xla_flags), which
  take effect on the compiled step, and leave them out when the plan's
  `xla_defaults` is off or SPECC_XLA_DEFAULTS=0.
"""

from __future__ import annotations

import functools
import json
import os
import re
import subprocess
import sys
import textwrap
from dataclasses import replace

import numpy as np
import pytest

import jax

jnp = jax.numpy

import specc  # noqa: E402
from specc import backend as registry  # noqa: E402
from specc.ir import Call, Train  # noqa: E402
from specc.options import OPTIMIZERS  # noqa: E402
from specc.plan import SpeedChoices, make_plan  # noqa: E402
from specc.runner import Options, train_model  # noqa: E402
from specc.weights import init_weights  # noqa: E402

from specc.backends.jax_flax import apply_fn, compute_args, to_native, xla_flags  # noqa: E402
from training_specs import GAN_PAIR as GAN, MNIST_CNN_OF, SMALL_CNN as CONV, cut_and_resume  # noqa: E402

J = registry.get("jax")

MNIST_CNN = MNIST_CNN_OF.format(conv1=8, conv2=16, batch=50)


LSTM = """
model m {
    input [6, 3]
    LSTM(8)
    Dense(2, activation=softmax)
}
"""

BN_ONLY = """
model m {
    input [4]
    BatchNorm()
}
"""


def write(tmp_path, text: str, name: str = "m.spec") -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return str(path)


def run(spec: str, out, **kw):
    return train_model(spec, None, Options(backend="jax", quiet=True, out=str(out), **kw))


def conv_model_and_plan(precision: str = "f32", xla_defaults: bool = True, samples: int = 128):
    program = specc.loads(CONV.format(epochs=1))
    model, train = program["m"], program.trains["m"]
    plan = make_plan(model, train, samples, "categorical")
    return model, replace(plan, precision=precision, speed=SpeedChoices(xla_defaults=xla_defaults))


def data(model, n: int = 128, seed: int = 0):
    rng = np.random.default_rng(seed)
    return rng.random((n, *model.input_shape)).astype(np.float32), rng.integers(0, 5, n)


def train_steps(trainer, x, y):
    split = trainer.put(x, y)
    trainer.begin_epoch(split, np.random.default_rng(0).permutation(len(x)), 0)
    for i in range(trainer.plan.steps_per_epoch):
        trainer.step(i)
    return split, trainer.pull()


HEAVY_OP = re.compile(r"stablehlo\.(convolution|dot_general)\b.*:\s*\(tensor<([^>]*)>,\s*tensor<([^>]*)>\)")


def heavy_op_types(text: str) -> list[str]:
    """The operands' element type of every convolution and dot in lowered
    StableHLO ("bf16", "f32"; "mixed" if its two operands differ)."""
    types = []
    for m in HEAVY_OP.finditer(text):
        a, b = (m.group(i).rsplit("x", 1)[-1] for i in (2, 3))
        types.append(a if a == b else "mixed")
    return types


def lowered_train_step(trainer, split, size: int = 32) -> str:
    fn = jax.jit(trainer._train, static_argnums=(5,))
    return fn.lower(trainer.carry, *split, trainer._order, jnp.int32(0), size).as_text()


def lowered_eval_step(trainer, split, size: int = 32) -> str:
    variables = {"params": trainer.carry["params"], "batch_stats": trainer.carry["batch_stats"]}
    sums = {"loss": jnp.zeros([], jnp.float32), "correct": jnp.zeros([], jnp.float32)}
    fn = jax.jit(trainer._eval, static_argnums=(5,))
    return fn.lower(sums, variables, split[0][:size], split[1][:size], jnp.int32(0), size).as_text()


def dtypes_of(tree) -> set:
    return {np.dtype(leaf.dtype) for leaf in jax.tree.leaves(tree)}


# ---------------------------------------------------------------- the compute dtype


def test_mixed_steps_compute_every_conv_and_matmul_in_bf16():
    model, plan = conv_model_and_plan(precision="mixed")
    trainer = J.trainer(model, plan, init_weights(model, 0))
    split = trainer.put(*data(model))
    trainer.begin_epoch(split, np.arange(128), 0)
    train_types = heavy_op_types(lowered_train_step(trainer, split))
    # 2 convs and 2 dense layers forward; their input and weight gradients backward (not the first conv's input)
    assert len(train_types) == 11 and set(train_types) == {"bf16"}, train_types
    eval_types = heavy_op_types(lowered_eval_step(trainer, split))  # evaluation runs the mixed forward too
    assert len(eval_types) == 4 and set(eval_types) == {"bf16"}, eval_types
    assert "precision mixed" in trainer.describe_speed()


def test_f32_steps_hold_no_bf16_at_all():
    model, plan = conv_model_and_plan()
    trainer = J.trainer(model, plan, init_weights(model, 0))
    split = trainer.put(*data(model))
    trainer.begin_epoch(split, np.arange(128), 0)
    for text in (lowered_train_step(trainer, split), lowered_eval_step(trainer, split)):
        assert "bf16" not in text
        assert set(heavy_op_types(text)) == {"f32"}
    assert "precision f32" in trainer.describe_speed()


def test_mixed_keeps_float32_params_state_and_loss():
    model, plan = conv_model_and_plan(precision="mixed")
    trainer = J.trainer(model, plan, init_weights(model, 0))
    x, y = data(model)
    split, metrics = train_steps(trainer, x, y)
    assert np.isfinite(metrics["loss"])
    carry = trainer.carry
    f32 = {np.dtype(np.float32)}
    assert dtypes_of(carry["params"]) == f32 and dtypes_of(carry["batch_stats"]) == f32
    assert dtypes_of({k: v for k, v in carry["opt"].items() if k != "count"}) == f32
    assert dtypes_of(carry["metrics"]) == {np.dtype(np.float32), np.dtype(np.int32)}
    assert {w.dtype for w in trainer.get_weights().values()} == {np.dtype(np.float32)}
    assert {v.dtype for v in trainer.get_optimizer_state().values() if v.ndim} == {np.dtype(np.float32)}


def test_mixed_batch_norm_normalises_in_float32():
    """Inputs exact in bf16: a float32 normalisation gives f32's output
    exactly, one in bf16 would round it (as Flax's BatchNorm(dtype=bf16) does)."""
    model = specc.loads(textwrap.dedent(BN_ONLY))["m"]
    variables = to_native(model, init_weights(model, 0))
    x = (np.arange(32, dtype=np.float32).reshape(8, 4) - 13.0) / 8.0
    for train in (True, False):
        want, want_stats = apply_fn(model)(variables, x, train)
        got, got_stats = apply_fn(model, **compute_args("mixed"))(variables, x, train)
        assert got.dtype == jnp.float32
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
        for a, b in zip(jax.tree.leaves(got_stats), jax.tree.leaves(want_stats)):
            assert a.dtype == jnp.float32
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_mixed_recurrent_cells_multiply_in_bf16_and_keep_f32_state():
    model = specc.loads(textwrap.dedent(LSTM))["m"]
    variables = to_native(model, init_weights(model, 0))
    x = np.random.default_rng(0).normal(size=(4, 6, 3)).astype(np.float32)
    apply = apply_fn(model, **compute_args("mixed"))
    text = jax.jit(lambda v, x: apply(v, x, False)[0]).lower(variables, x).as_text()
    assert heavy_op_types(text) and set(heavy_op_types(text)) == {"bf16"}
    out = apply(variables, x, False)[0]
    want = apply_fn(model)(variables, x, False)[0]
    assert out.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(out), np.asarray(want), atol=0.03)


def test_unknown_precision_is_refused():
    model, plan = conv_model_and_plan(precision="f16")
    with pytest.raises(ValueError, match="precision 'f16'"):
        J.trainer(model, plan, init_weights(model, 0))


def test_jax_declares_mixed():  # the runner refuses --precision mixed on a backend that does not
    assert J.PRECISIONS == ("f32", "mixed")


# ---------------------------------------------------------------- runs


def test_mixed_mnist_run_reaches_f32_accuracy(tmp_path):
    spec = write(tmp_path, MNIST_CNN)
    f32 = run(spec, tmp_path / "f32", limit=2000)
    mixed = run(spec, tmp_path / "mixed", limit=2000, precision="mixed")
    assert f32.result["precision"] == "f32"
    saved = json.loads((tmp_path / "mixed" / "result.json").read_text())
    assert saved["precision"] == "mixed"
    assert f32.result["test_accuracy"] > 0.8  # it learned
    assert abs(mixed.result["test_accuracy"] - f32.result["test_accuracy"]) < 0.04
    assert {w.dtype for w in mixed.weights.values()} == {np.dtype(np.float32)}
    assert any(not np.array_equal(mixed.weights[k], f32.weights[k]) for k in f32.weights)  # another precision


def test_mixed_resume_is_bit_identical(tmp_path):
    spec = write(tmp_path, CONV.format(epochs=2))  # limit 256: 192 training samples, 64 validation, no partial batch
    whole = run(spec, tmp_path / "whole", limit=256, precision="mixed")
    resumed, cut_epoch = cut_and_resume(spec, tmp_path / "cut", "jax", 256, precision="mixed")
    assert cut_epoch == 0
    assert resumed.result["epochs"] == 2 and resumed.result["precision"] == "mixed"
    for key in whole.weights:
        assert np.array_equal(whole.weights[key], resumed.weights[key]), key
    assert [r["loss"] for r in whole.history] == [r["loss"] for r in resumed.history]


# ---------------------------------------------------------------- XLA options


def measured_here() -> bool:
    version = xla_flags._jaxlib_version()
    return version is not None and any(s.jaxlib[0] <= version < s.jaxlib[1] for s in xla_flags.SETTINGS)


def test_trainers_jit_with_the_xla_options_unless_turned_off(monkeypatch):
    monkeypatch.delenv(xla_flags.ENV_SWITCH, raising=False)
    monkeypatch.delenv("XLA_FLAGS", raising=False)
    model, plan = conv_model_and_plan()
    expected = xla_flags.compiler_options(model)
    assert bool(expected) == measured_here()
    on = J.trainer(model, plan, init_weights(model, 0))
    assert on._jit == ({"compiler_options": expected} if expected else {})
    off = J.trainer(model, conv_model_and_plan(xla_defaults=False)[1], init_weights(model, 0))
    assert off._jit == {} and "XLA defaults off" in off.describe_speed()
    monkeypatch.setenv(xla_flags.ENV_SWITCH, "0")
    assert J.trainer(model, plan, init_weights(model, 0))._jit == {}


# In a fresh process whose jax starts before specc is imported: XLA_FLAGS then
# holds nothing of specc's (this session's may, since the backend sets it when
# imported before jax starts), so only the per-jit options can act.
OPTIONS_PROBE = '''
import jax; jax.devices()
import sys
from dataclasses import replace
import numpy as np
import specc
from specc import backend
from specc.plan import SpeedChoices, make_plan
from specc.weights import init_weights
program = specc.loads(sys.argv[1])
model, train = program["cnn"], program.trains["cnn"]
for on in (True, False):
    plan = replace(make_plan(model, train, 90, "categorical"), speed=SpeedChoices(xla_defaults=on))
    trainer = backend.get("jax").trainer(model, plan, init_weights(model, 0))
    rng = np.random.default_rng(0)
    split = trainer.put(rng.random((90, 1, 28, 28)).astype(np.float32), rng.integers(0, 10, 90))
    trainer.begin_epoch(split, np.arange(90), 0)  # compiles the partial batch's step ahead of time
    print(trainer._train_steps[90 % train.batch].as_text().count("__ynn_fusion"))
'''


def test_the_xla_options_take_effect_on_the_compiled_step():
    """specc's setting takes convolutions away from YNNPACK: the trainer's
    step compiled with the options has fewer YNNPACK fusions than without."""
    if not measured_here():
        pytest.skip("no setting measured for this jaxlib")
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", xla_flags.ENV_SWITCH)}
    out = subprocess.run([sys.executable, "-c", OPTIONS_PROBE, MNIST_CNN], env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    on, off = map(int, out.stdout.split())
    assert on < off, (on, off)


# ---------------------------------------------------------------- the GAN trainer


def gan_trainer(precision: str = "f32"):
    program = specc.loads(GAN)
    generator, discriminator = program["gen"], program["disc"]
    optimizer = Call("adam", {**OPTIMIZERS["adam"], "lr": 2e-4, "beta1": 0.5})
    train = Train(model="gen", data=Call("mnist", {}), loss="binary_cross_entropy", optimizer=optimizer,
                  batch=16, epochs=1, seed=3)
    plan = replace(make_plan(generator, train, 48), precision=precision)
    return J.gan_trainer(generator, discriminator, plan, init_weights(generator, 1), init_weights(discriminator, 2), 8)


def gan_steps(trainer, n: int = 48):
    images = np.tanh(np.random.default_rng(0).normal(size=(n, 1, 8, 8))).astype(np.float32)
    real = trainer.put(images)
    trainer.begin_epoch(real, np.random.default_rng(1).permutation(n), 0)
    for i in range(trainer.plan.steps_per_epoch):
        trainer.step(i)
    return real, trainer.pull()


def test_gan_mixed_trains_in_bf16_with_float32_state():
    mixed = gan_trainer(precision="mixed")
    real, mm = gan_steps(mixed)
    assert all(np.isfinite(mm[k]) for k in ("d_loss", "g_loss", "d_real", "d_fake"))
    assert 0.0 < mm["d_loss"] < 5.0 and 0.0 < mm["d_real"] < 1.0 and mm["samples"] == 48
    f32_types = {np.dtype(np.float32)}
    for role in ("generator", "discriminator"):
        state = mixed.carry[role]
        assert dtypes_of(state["params"]) == f32_types and dtypes_of(state["batch_stats"]) == f32_types
        assert dtypes_of({k: v for k, v in state["opt"].items() if k != "count"}) == f32_types
    step = jax.jit(functools.partial(mixed.fns.train, place=mixed.place), static_argnums=(4,))
    types = heavy_op_types(step.lower(mixed.carry, real, mixed._order, jnp.int32(0), 16).as_text())
    assert len(types) >= 12 and set(types) == {"bf16"}, types
    assert "precision mixed" in mixed.describe_speed()
    images = mixed.generate(np.random.default_rng(2).normal(size=(5, 8)).astype(np.float32))
    assert images.dtype == np.float32 and images.shape == (5, 1, 8, 8) and np.isfinite(images).all()
    again = gan_trainer(precision="mixed")  # a checkpoint's groups round-trip
    again.set_weights(mixed.get_weights())
    again.set_optimizer_state(mixed.get_optimizer_state())
    assert int(again.carry["step"]) == int(mixed.carry["step"]) == 3
