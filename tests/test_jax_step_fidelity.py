"""The JAX training step is the PyTorch training step (issue 17):

- the tiled max pool (backends/jax_flax/layers.py) sends each window's
  gradient to its first maximum, as reduce_window's select_and_scatter and
  torch's max_pool2d do, on MNIST's exact ties and after a BatchNorm inside a
  jitted step (where XLA:CPU once compiled the BatchNorm twice, differently,
  and the gradient of whole windows went missing);
- Dropout masks are specc.noise's on both backends: jax's masks equal torch's
  SeededDropout masks bit for bit, and a network with Dropout trains to the
  same weights on both (a recurrent one, a convolutional one whose Dropout
  sees NHWC values, and a GAN whose D runs three forwards per step).

Weights are compared per array: max |jax - torch| over max |torch|.
"""

from __future__ import annotations

import numpy as np
import pytest

import specc
from specc import noise
from specc.backend import get
from specc.data import load_dataset
from specc.ir import Call
from specc.plan import make_plan

# Hard imports: CI installs .[all,dev], so a missing framework must fail here, not skip.
import jax  # noqa: E402
import torch  # noqa: E402

from specc.backends.jax_flax import DropoutNoise, apply_fn, layers, to_native  # noqa: E402
from specc.backends.jax_flax.noise import keep_mask  # noqa: E402
from specc.backends.pytorch import parallel as torch_parallel  # noqa: E402

jnp, lax = jax.numpy, jax.lax

RTOL = 1e-5  # per weight array, relative to its largest value

# The network: no bias before the BatchNorm (its gradient would be
# float noise), a max pool right after BatchNorm + ReLU.
BN_POOL = """
model m {
    input [1, 28, 28]
    Conv2D(12, kernel=3, padding=same, bias=false)
    BatchNorm()
    ReLU()
    MaxPool(2)
    Flatten()
    Dense(10, activation=softmax)
}
train m {
    data      = mnist()
    loss      = cross_entropy
    optimizer = sgd(lr=0.05, momentum=0.9)
    batch     = 32
    seed      = 5
}
"""


def mnist(n: int) -> tuple[np.ndarray, np.ndarray]:
    data = load_dataset(Call("mnist", {}), (1, 28, 28), limit=n)
    return data.x_train, data.y_train


def reduce_window_pool(x, size):
    window = (1, *size, 1)
    return lax.reduce_window(x, -jnp.inf, lax.max, window, window, "VALID")


def train(backend: str, text: str, x, y, steps: int, weights=None):
    """The backend's trainer after `steps` steps of one epoch (in order)."""
    program = specc.loads(text)
    (name,) = program.trains
    model = program[name]
    plan = make_plan(model, program.trains[name], len(x))
    trainer = get(backend).trainer(model, plan, weights if weights is not None else specc.init_weights(model, 0))
    data = trainer.put(x, y)
    trainer.begin_epoch(data, np.arange(len(x)), 0)
    for i in range(steps):
        trainer.step(i)
    return trainer.get_weights()


def assert_same_weights(got: dict, want: dict, what: str, rtol: float = RTOL) -> None:
    assert got.keys() == want.keys(), what
    for key, value in want.items():
        scale = max(float(np.max(np.abs(value))), 1e-12)
        worst = float(np.max(np.abs(got[key] - value))) / scale
        assert worst <= rtol, f"{what}: {key} differs by {worst:.2e} of its largest value"


# ---------------------------------------------------------------- max pooling


def test_tiled_pool_gradient_is_reduce_window_on_mnist_ties():
    """MNIST's blank borders and saturated strokes: windows of equal values,
    zeros and ones. The gradient goes to the first maximum, exactly."""
    x, _ = mnist(16)
    images = np.transpose(x, (0, 2, 3, 1))
    x = np.concatenate([images, np.round(images * 4) / 4], axis=-1)  # more ties: quantised strokes
    cotangent = np.random.default_rng(0).normal(size=(16, 14, 14, 2)).astype(np.float32)

    def grad(pool):
        return jax.jit(jax.grad(lambda v: jnp.sum(pool(v, (2, 2)) * cotangent)))(x)

    assert np.mean(x == 0) > 0.5  # the data has the ties this is about
    np.testing.assert_array_equal(grad(layers.tiled_max_pool), grad(reduce_window_pool))


def test_tiled_pool_gradient_after_batch_norm_in_a_jitted_step():
    """conv -> BatchNorm -> ReLU -> pool, differentiated in one jitted function:
    XLA fuses the BatchNorm into the pool's forward and its backward. Every
    gradient equals reduce_window's (the position search once lost 1e-2)."""
    x, _ = mnist(64)
    x = np.transpose(x, (0, 2, 3, 1))
    rng = np.random.default_rng(1)
    kernel = (rng.normal(size=(3, 3, 1, 12)) * 0.3).astype(np.float32)
    gamma = rng.uniform(0.5, 1.5, size=12).astype(np.float32)
    beta = (rng.normal(size=12) * 0.1).astype(np.float32)
    weights = rng.normal(size=(64, 14, 14, 12)).astype(np.float32)

    def loss(pool, kernel, gamma, beta):
        h = lax.conv_general_dilated(x, kernel, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
        mean = h.mean((0, 1, 2))
        var = jnp.square(h - mean).mean((0, 1, 2))
        y = jax.nn.relu((h - mean) * lax.rsqrt(var + 1e-3) * gamma + beta)
        return jnp.sum(jnp.sin(pool(y, (2, 2))) * weights)

    def grads(pool):
        return jax.jit(jax.grad(lambda *a: loss(pool, *a), argnums=(0, 1, 2)))(kernel, gamma, beta)

    for name, got, want in zip(("kernel", "gamma", "beta"), grads(layers.tiled_max_pool), grads(reduce_window_pool)):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6 * float(np.max(np.abs(want))), err_msg=name)


def test_batch_norm_then_pool_trains_as_reduce_window_and_torch(monkeypatch):
    """The issue's network, three SGD (momentum) steps on MNIST batches: the
    tiled pool, reduce_window and torch agree."""
    x, y = mnist(96)
    tiled = train("jax", BN_POOL, x, y, 3)
    on_torch = train("torch", BN_POOL, x, y, 3)
    monkeypatch.setattr(layers, "tiled_max_pool", reduce_window_pool)
    reduce_window = train("jax", BN_POOL, x, y, 3)
    assert_same_weights(tiled, reduce_window, "tiled pool vs reduce_window")
    assert_same_weights(tiled, on_torch, "jax vs torch")


# ---------------------------------------------------------------- dropout masks


@pytest.mark.parametrize("seed,step,slot,forward,rows,shape,rate", [
    (0, 0, 0, 0, (0, 8), (5,), 0.5),
    (7, 3, 1, 2, (4, 10), (3, 4, 5), 0.3),  # a second rank's rows, D's third forward
    (2**40 + 9, 123456, 5, 1, (0, 3), (2, 6), 0.9),  # a 64-bit seed
    (1, 2**26, 0, 3, (1, 5), (4,), 0.1),  # step * batch beyond 2**31: the key wraps mod 2**32
])
def test_jax_masks_are_torch_masks(seed, step, slot, forward, rows, shape, rate):
    lo, hi = rows
    batch = 64
    clock = torch_parallel.DropoutClock(seed, batch)
    clock.at(step, lo, hi, forward)
    layer = torch_parallel.SeededDropout(rate, slot, clock).train()
    with torch.no_grad():
        on_torch = layer(torch.ones((hi - lo, *shape))).numpy()
    drawn = DropoutNoise(step=jnp.int32(step), seed=seed, batch=batch, forward=forward)
    on_jax = np.asarray(jax.jit(lambda n: keep_mask(n, slot, hi, shape, rate))(drawn))[lo:]
    reference = noise.dropout_keep(seed, slot, forward, step, batch, range(lo, hi), shape, rate)
    np.testing.assert_array_equal(on_torch != 0, reference)
    np.testing.assert_array_equal(on_jax, reference)
    assert 0 < reference.mean() < 1 or reference.size < 8
    np.testing.assert_array_equal(on_torch[reference], np.float32(1.0 / (1.0 - rate)))


# A Dropout on a convolution's NHWC output (jax) and one on a flat vector:
# slots 0 and 1, in layer order, as torch's seeded_dropout numbers them.
CONV_DROPOUT = """
model c {
    input [2, 6, 5]
    Conv2D(3, kernel=3, padding=same)
    Dropout(0.4)
    Flatten()
    Dropout(0.0)
    Dense(8, activation=tanh)
    Dropout(0.25)
    Dense(4)
}
train c {
    data      = synthetic(samples=40, classes=4)
    loss      = mse
    optimizer = adam(lr=1e-2)
    batch     = 16
    seed      = 11
}
"""


def test_a_training_forward_draws_torch_masks_in_nhwc():
    program = specc.loads(CONV_DROPOUT)
    model = program["c"]
    assert layers.dropout_slots(model) == {"dropout_1": 0, "dropout_2": 1, "dropout_3": 2}
    plan = make_plan(model, program.trains["c"], 40)
    weights = specc.init_weights(model, 0)
    x = np.random.default_rng(0).normal(size=(16, 2, 6, 5)).astype(np.float32)
    trainer = get("torch").trainer(model, plan, weights)
    apply = jax.jit(apply_fn(model), static_argnums=2)
    for step in (0, 5):
        trainer.clock.at(step, 0, 16)
        with torch.no_grad():
            want = trainer.net(torch.as_tensor(x)).numpy()
        got, _ = apply(to_native(model, weights), x, True, DropoutNoise(step=step, seed=11, batch=16))
        np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-6, err_msg=f"step {step}")


def test_dropout_needs_noise_in_training_only():
    model = specc.loads(CONV_DROPOUT)["c"]
    variables = to_native(model, specc.init_weights(model, 0))
    x = np.ones((2, 2, 6, 5), np.float32)
    apply = apply_fn(model)
    np.testing.assert_array_equal(apply(variables, x, False)[0], apply(variables, x, False, "ignored")[0])
    with pytest.raises(ValueError, match="DropoutNoise"):
        apply(variables, x, True, jax.random.key(0))


GRU_DROPOUT = """
model r {
    input [6, 3]
    GRU(8)
    Dropout(0.3)
    Dense(3, activation=softmax)
}
train r {
    data      = synthetic(samples=40, classes=3)
    loss      = cross_entropy
    optimizer = adam(lr=1e-2)
    batch     = 16
    seed      = 4
}
"""


@pytest.mark.parametrize("text,samples", [(GRU_DROPOUT, 48), (CONV_DROPOUT, 40)], ids=["gru", "conv"])
def test_a_network_with_dropout_trains_the_same_on_both_backends(text, samples):
    """Three Adam steps of 16 (conv: the last a partial 8, whose rows draw
    the keys of a full batch's first rows): every weight array agrees."""
    program = specc.loads(text)
    (name,) = program.trains
    model = program[name]
    rng = np.random.default_rng(3)
    x = rng.normal(size=(samples, *model.input_shape)).astype(np.float32)
    y = (rng.integers(0, 3, size=samples).astype(np.int32) if "cross_entropy" in text
         else rng.normal(size=(samples, 4)).astype(np.float32))
    on_jax = train("jax", text, x, y, 3)
    on_torch = train("torch", text, x, y, 3)
    assert_same_weights(on_jax, on_torch, "jax vs torch")


GAN_DROPOUT = """
model gen {
    input [8]
    Dense(32, activation=relu)
    Dropout(0.3)
    Dense(64, activation=tanh)
    Reshape([1, 8, 8])
}
model disc {
    input [1, 8, 8]
    Conv2D(4, kernel=3, stride=2, padding=same)
    LeakyReLU(0.2)
    Dropout(0.25)
    Flatten()
    Dropout(0.5)
    Dense(1, activation=sigmoid)
}
"""


def test_a_gan_with_dropout_steps_the_same_on_both_backends():
    """G's Dropout is slot 0, D's are slots 1 and 2; D's three forwards of a
    step draw three masks. Three steps of 16."""
    from specc.ir import Train

    program = specc.loads(GAN_DROPOUT)
    generator, discriminator = program["gen"], program["disc"]
    train_block = Train(model="gen", data=Call("mnist", {}), loss="binary_cross_entropy",
                        optimizer=Call("sgd", {"lr": 0.05, "momentum": 0.0, "nesterov": False}), batch=16, epochs=1,
                        seed=3)
    plan = make_plan(generator, train_block, 48)
    g_weights, d_weights = specc.init_weights(generator, 1), specc.init_weights(discriminator, 2)
    x = np.tanh(np.random.default_rng(0).normal(size=(48, 1, 8, 8))).astype(np.float32)
    out = {}
    for backend in ("jax", "torch"):
        trainer = get(backend).gan_trainer(generator, discriminator, plan, g_weights, d_weights, 8)
        data = trainer.put(x)
        trainer.begin_epoch(data, np.arange(48), 0)
        for i in range(3):
            trainer.step(i)
        out[backend] = trainer.get_weights()
    for role in ("generator", "discriminator"):
        assert_same_weights(out["jax"][role], out["torch"][role], f"GAN {role}")
