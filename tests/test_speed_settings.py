"""Speed settings change speed, not results (issue 13).

- JAX: the tiled max-pool formulation (backends/jax_flax/layers.py) gives the
  values and gradients of lax.reduce_window + select_and_scatter exactly,
  ties included; specc's XLA:CPU defaults (backends/jax_flax/xla_flags.py)
  are applied only where they act, never over the user's own XLA_FLAGS, can
  be switched off, and training with and without them agrees within the
  existing tolerances; the mixed-precision plumbing leaves the f32 model as
  it was.
- PyTorch (backends/pytorch/speed.py): channels_last and torch.compile train
  to the same weights within tolerance, and compile falls back cleanly.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import specc
from specc.weights import init_weights

import jax

jnp = jax.numpy
lax = jax.lax

from specc.backends.jax_flax import apply_fn, layers, to_native, xla_flags  # noqa: E402

CONV = """
model m {
    input [2, 12, 10]
    Conv2D(6, kernel=3, padding=same, activation=relu)
    MaxPool(2)
    Conv2D(4, kernel=3, padding=same, activation=relu)
    MaxPool(2)
    Flatten()
    Dense(16, activation=relu)
    Dense(5, activation=softmax)
}
"""
MLP = """
model m {
    input [20]
    Dense(16, activation=relu)
    Dense(5, activation=softmax)
}
"""


def model_of(text: str):
    return specc.loads(textwrap.dedent(text))["m"]


def batch(model, n=16, seed=0):
    return np.random.default_rng(seed).random((n, *model.input_shape)).astype(np.float32)


def lax_max_pool(x, k, s=None):
    s = s or k
    return lax.reduce_window(x, -jnp.inf, lax.max, (1, k, k, 1), (1, s, s, 1), "VALID")


# ---------------------------------------------------------------- the tiled max pool


@pytest.mark.parametrize("shape,k", [((3, 8, 8, 4), 2), ((2, 7, 9, 3), 2), ((2, 9, 6, 2), 3)])
@pytest.mark.parametrize("kind", ["random", "ties", "relu_plateau"])
def test_tiled_max_pool_is_reduce_window_exactly(shape, k, kind):
    rng = np.random.default_rng(1)
    x = rng.normal(size=shape).astype(np.float32)
    if kind == "ties":
        x = np.round(x)  # many equal values in a window
    if kind == "relu_plateau":  # what ReLU after a 'same' conv on a blank border gives: equal positives and zeros
        x = np.maximum(x, 0)
        x[:, :3] = 0.5
    ref_y, ref_vjp = jax.vjp(lambda v: lax_max_pool(v, k), x)
    y, vjp = jax.vjp(lambda v: layers.tiled_max_pool(v, (k, k)), x)
    g = rng.normal(size=ref_y.shape).astype(np.float32)
    np.testing.assert_array_equal(y, ref_y)
    np.testing.assert_array_equal(vjp(g)[0], ref_vjp(g)[0])  # the first maximum of each window gets it
    t = rng.normal(size=shape).astype(np.float32)
    np.testing.assert_array_equal(jax.jvp(lambda v: layers.tiled_max_pool(v, (k, k)), (x,), (t,))[1],
                                  jax.jvp(lambda v: lax_max_pool(v, k), (x,), (t,))[1])


def test_tiled_max_pool_gradient_compiled():
    rng = np.random.default_rng(2)
    x = np.maximum(rng.normal(size=(4, 16, 12, 5)), 0).astype(np.float32)
    w = rng.normal(size=(4, 8, 6, 5)).astype(np.float32)
    ref = jax.jit(jax.grad(lambda v: jnp.sum(lax_max_pool(v, 2) * w)))(x)
    ours = jax.jit(jax.grad(lambda v: jnp.sum(layers.tiled_max_pool(v, (2, 2)) * w)))(x)
    np.testing.assert_array_equal(ours, ref)


def test_only_non_overlapping_unpadded_pools_are_tiled(monkeypatch):
    calls = []
    monkeypatch.setattr(layers, "tiled_max_pool", lambda x, size: calls.append(size) or lax_max_pool(x, size[0]))
    model = model_of("""
model m {
    input [2, 9, 8]
    MaxPool(2)
    MaxPool(3, stride=1)
    MaxPool(2, padding=[1, 0])
}
""")
    apply_fn(model)(to_native(model, init_weights(model, 0)), batch(model, 2), False)
    assert calls == [(2, 2)]


def test_model_gradients_match_torch_through_tiled_pools():
    import torch  # noqa: F841
    model = model_of(CONV)
    weights = init_weights(model, 3)
    x = batch(model, 8)
    target = np.random.default_rng(4).random((8, 5)).astype(np.float32)
    loss_j, grads_j = specc.backend.get("jax").gradients(model, weights, x, target)
    loss_t, grads_t = specc.backend.get("torch").gradients(model, weights, x, target)
    assert loss_j == pytest.approx(loss_t, rel=1e-5)
    for key in grads_t:
        scale = max(float(np.max(np.abs(grads_t[key]))), 1e-6)
        np.testing.assert_allclose(grads_j[key], grads_t[key], rtol=1e-4, atol=1e-4 * scale, err_msg=key)


# ---------------------------------------------------------------- XLA:CPU defaults


def measured_here() -> bool:
    """Whether a setting was measured on this jaxlib (whatever the environment says)."""
    version = xla_flags._jaxlib_version()
    return version is not None and any(s.jaxlib[0] <= version < s.jaxlib[1] for s in xla_flags.SETTINGS)


def test_compiler_options_only_for_models_they_act_on(monkeypatch):
    monkeypatch.delenv("XLA_FLAGS", raising=False)
    monkeypatch.delenv(xla_flags.ENV_SWITCH, raising=False)
    conv, mlp = model_of(CONV), model_of(MLP)
    assert bool(xla_flags.compiler_options(conv)) == measured_here()
    assert xla_flags.compiler_options(mlp) == {}
    assert xla_flags.compiler_options(conv, platform="gpu") == {}


def test_compiler_options_yield_to_the_user_and_the_switch(monkeypatch):
    conv = model_of(CONV)
    monkeypatch.setenv(xla_flags.ENV_SWITCH, "0")
    assert xla_flags.compiler_options(conv) == {}
    monkeypatch.delenv(xla_flags.ENV_SWITCH)
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_experimental_ynn_fusion_type=individual_dot")
    assert xla_flags.compiler_options(conv) == {}


def test_unmeasured_jaxlib_gets_no_flags(monkeypatch):
    monkeypatch.delenv("XLA_FLAGS", raising=False)
    monkeypatch.setattr(xla_flags, "_jaxlib_version", lambda: (99, 0))
    assert xla_flags.applicable() == ()


def _train(model, steps: int, options: dict) -> dict:
    """A few Adam steps of the jitted training-mode forward and loss, compiled
    with `options`."""
    import optax

    apply = apply_fn(model, logits=True)
    params = to_native(model, init_weights(model, 0))["params"]
    opt = optax.adam(1e-2)
    state = opt.init(params)
    x = batch(model, 32)
    y = jnp.asarray(np.random.default_rng(5).integers(0, 5, 32), jnp.int32)

    def step(params, state):
        def loss_fn(p):
            out, _ = apply({"params": p, "batch_stats": {}}, x, True)
            return optax.softmax_cross_entropy_with_integer_labels(out, y).mean()

        grads = jax.grad(loss_fn)(params)
        updates, state = opt.update(grads, state)
        return optax.apply_updates(params, updates), state

    fn = jax.jit(step, compiler_options=options or None)
    for _ in range(steps):
        params, state = fn(params, state)
    return jax.device_get(params)


def test_training_agrees_with_and_without_the_xla_setting():
    model = model_of(CONV)
    options = {s.flag: s.option_value for s in xla_flags.SETTINGS}
    with_, without = _train(model, 5, options), _train(model, 5, {})
    for layer in without:
        for name in without[layer]:
            np.testing.assert_allclose(with_[layer][name], without[layer][name], rtol=1e-4, atol=1e-5,
                                       err_msg=f"{layer}/{name}")


def _fresh_python(code: str, env: dict) -> str:
    full = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", xla_flags.ENV_SWITCH)}
    full.update(env)
    out = subprocess.run([sys.executable, "-c", code], env=full, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.strip()


ENV_PROBE = ("import os; from specc import backend; status = backend.prepare_jax(); "
             "print(os.environ.get('XLA_FLAGS', ''), '|', status)")


def test_apply_env_sets_the_flag_before_jax_starts():
    if not measured_here():
        pytest.skip("no setting measured for this jaxlib")
    flags, status = _fresh_python(ENV_PROBE, {}).split("|")
    assert "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution" in flags
    assert status.strip().startswith("applied")


def test_apply_env_respects_the_switch_and_the_users_flags():
    flags, status = _fresh_python(ENV_PROBE, {xla_flags.ENV_SWITCH: "0"}).split("|")
    assert flags.strip() == "" and status.strip().startswith("off")
    mine = "--xla_cpu_experimental_ynn_fusion_type=individual_dot"
    flags, _ = _fresh_python(ENV_PROBE, {"XLA_FLAGS": mine}).split("|")
    assert flags.strip() == mine


def test_apply_env_after_jax_started_changes_nothing():
    code = ("import jax, os; jax.devices(); from specc import backend; status = backend.prepare_jax(); "
            "print(os.environ.get('XLA_FLAGS', ''), '|', status)")
    flags, status = _fresh_python(code, {}).split("|")
    assert flags.strip() == ""
    if measured_here():
        assert "not applied" in status


# ---------------------------------------------------------------- mixed precision plumbing


def test_default_dtype_builds_the_f32_model_exactly():
    model = model_of(CONV)
    variables = to_native(model, init_weights(model, 0))
    x = batch(model, 4)
    a = apply_fn(model)(variables, x, False)[0]
    b = apply_fn(model, dtype=None)(variables, x, False)[0]
    np.testing.assert_array_equal(a, b)


def test_bf16_compute_keeps_f32_parameters_outputs_and_gradients():
    model = model_of(CONV)
    variables = to_native(model, init_weights(model, 0))
    x = batch(model, 4)
    f32 = apply_fn(model)(variables, x, False)[0]
    apply = apply_fn(model, dtype=jnp.bfloat16)
    y = apply(variables, x, False)[0]
    assert y.dtype == jnp.float32
    np.testing.assert_allclose(y, f32, atol=2e-2)
    grads = jax.grad(lambda p: jnp.sum(apply({"params": p, "batch_stats": {}}, x, True)[0] ** 2))(
        variables["params"])
    assert {leaf.dtype for leaf in jax.tree.leaves(grads)} == {jnp.dtype(jnp.float32)}


# ---------------------------------------------------------------- PyTorch speed options

TORCH_SPEC = CONV + """
train m {
    data      = synthetic(samples=256, classes=5)
    loss      = cross_entropy
    optimizer = adam(lr=1e-2)
    batch     = 32
    epochs    = 1
    metrics   = [accuracy]
}
"""


def _torch_trainer(channels_last: bool = False, compiled: bool = False):
    """Four steps of the torch trainer with the speed options applied as the
    trainer will apply them (speed.Speed: the net before the first step, the
    stored split, the gather and the forward of full batches)."""
    import torch
    from specc.backends.pytorch import speed
    from specc.plan import make_plan

    program = specc.loads(TORCH_SPEC)
    model, train = program["m"], program.trains["m"]
    plan = make_plan(model, train, 128, "categorical")
    trainer = specc.backend.get("torch").trainer(model, plan, init_weights(model, 0))
    fast = speed.Speed(trainer.net, speed.SpeedOptions(channels_last=channels_last, compile=compiled), plan.batch)
    assert fast.channels_last == channels_last
    if compiled and fast.compiled.compiled is None:
        pytest.skip(fast.compiled.reason)
    x = batch(model, 128)
    y = np.random.default_rng(6).integers(0, 5, 128)
    data = trainer.put(x, y)
    data.x = fast.data(data.x)
    trainer.begin_epoch(data, np.arange(128), 0)
    for i in range(4):  # Trainer.step with the options' gather and forward
        idx = trainer._order[i * 32:(i + 1) * 32]
        xb, yb = fast.gather(data.x, idx), data.y.index_select(0, idx)
        loss = trainer._loss_fn(fast.forward(xb), yb)
        trainer.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        trainer.update.prepare(1e-2, trainer.updates + 1)
        trainer.optimizer.step()
        trainer.updates += 1
    if compiled:
        assert fast.compiled.compiled is not None, fast.compiled.reason
    return torch, trainer.get_weights()


def test_channels_last_trains_to_the_same_weights():
    torch, plain = _torch_trainer()
    _, fast = _torch_trainer(channels_last=True)
    for key in plain:
        np.testing.assert_allclose(fast[key], plain[key], rtol=1e-5, atol=1e-6, err_msg=key)


def test_channels_last_gather_keeps_the_format():
    import torch
    from specc.backends.pytorch import speed

    x = speed.channels_last_data(torch.randn(6, 3, 4, 5))
    got = speed.gather(x, torch.tensor([4, 0, 2]))
    assert got.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(got, x[[4, 0, 2]])


def test_compile_falls_back_with_a_reason(monkeypatch):
    import torch  # noqa: F401
    from specc.backends.pytorch import speed

    monkeypatch.setattr(speed, "compiler_problem", lambda device="cpu": "no C++ compiler found")
    forward, reason = speed.maybe_compile(__import__("torch").nn.Linear(3, 2))
    assert forward.compiled is None and "no C++ compiler" in reason


@pytest.mark.skipif(os.environ.get("SPECC_TEST_COMPILE") != "1",
                    reason="torch.compile takes minutes on a 2-core machine; set SPECC_TEST_COMPILE=1")
def test_compile_trains_to_the_same_weights():
    _, plain = _torch_trainer()
    _, fast = _torch_trainer(compiled=True)
    for key in plain:
        np.testing.assert_allclose(fast[key], plain[key], rtol=1e-5, atol=1e-6, err_msg=key)


def test_dropout_is_one_graph_for_torch_compile():
    """--compile: the counter-based dropout traces into the network's graph
    (no graph break) once, not once per step (an int step in the graph was a
    constant: every step recompiled until torch gave up), and its masks are
    the eager network's."""
    import torch
    import torch._dynamo
    from torch._dynamo.testing import CompileCounter

    from specc.plan import make_plan
    from training_specs import SMALL_CNN

    program = specc.loads(SMALL_CNN.format(epochs=1))
    model, train = program["m"], program.trains["m"]
    trainer = specc.backend.get("torch").trainer(model, make_plan(model, train, 384, "categorical"),
                                                 init_weights(model, 0))
    torch._dynamo.reset()
    counter = CompileCounter()
    compiled = torch.compile(trainer.net, backend=counter, fullgraph=True, dynamic=False)  # a break raises
    x = torch.as_tensor(batch(model, 32))
    with torch.no_grad():
        for step in range(4):
            trainer.clock.at(step, 0, 32)
            got, want = compiled(x), trainer.net(x)
            torch.testing.assert_close(got, want, rtol=0, atol=0)
            if step:
                assert not torch.equal(got, first), "the masks did not change with the step"
            else:
                first = got
    assert counter.frame_count == 1
