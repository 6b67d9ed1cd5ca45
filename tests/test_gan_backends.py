"""The GAN step (`recipe = gan(D, latent=N)`) on both backends: the same
update from the same weights, seed and batches; the step's semantics checked
against a plain autograd reference; checkpoints that resume exactly; an
inference-mode generate(); non-finite losses found without a per-step sync."""

from __future__ import annotations

import numpy as np
import pytest

import specc
from specc import noise
from specc.ir import Call, Train
from specc.options import OPTIMIZERS
from specc.plan import make_plan

import jax  # noqa: F401
import torch

from specc.backends import jax_flax, pytorch  # noqa: E402
from training_specs import GAN_PAIR as SPEC  # noqa: E402 - no bias before a BatchNorm

LATENT, BATCH, SAMPLES, SEED = 8, 16, 40, 3  # 40 samples: two full batches and one of 8
BACKENDS = {"jax": jax_flax, "torch": pytorch}
ROLES = ("generator", "discriminator")


@pytest.fixture(scope="module")
def pair():
    program = specc.loads(SPEC)
    return program["gen"], program["disc"]


def make_gan_plan(generator, optimizer: Call | None = None, seed: int = SEED):
    optimizer = optimizer or Call("adam", {**OPTIMIZERS["adam"], "lr": 2e-4, "beta1": 0.5})
    train = Train(model=generator.name, data=Call("mnist", {}), loss="binary_cross_entropy", optimizer=optimizer,
                  batch=BATCH, epochs=2, seed=seed)
    return make_plan(generator, train, SAMPLES)


def images(n: int = SAMPLES) -> np.ndarray:
    return np.tanh(np.random.default_rng(0).normal(size=(n, 1, 8, 8))).astype(np.float32)


def start_weights(pair):
    generator, discriminator = pair
    return {"generator": specc.init_weights(generator, 1), "discriminator": specc.init_weights(discriminator, 2)}


def order_of(epoch: int) -> np.ndarray:
    return np.random.default_rng(100 + epoch).permutation(SAMPLES)


def new_trainer(backend, pair, plan, weights):
    generator, discriminator = pair
    return BACKENDS[backend].gan_trainer(generator, discriminator, plan, weights["generator"],
                                         weights["discriminator"], LATENT)


def run_epochs(trainer, x, epochs, steps: int | None = None):
    data = trainer.put(x)
    for epoch in epochs:
        trainer.begin_epoch(data, order_of(epoch), epoch)
        for i in range(steps if steps is not None else -(-SAMPLES // BATCH)):
            trainer.step(i)
    return trainer


def assert_groups_close(got: dict, want: dict, atol: float = 1e-4) -> None:
    for role in ROLES:
        assert got[role].keys() == want[role].keys()
        for key, value in want[role].items():
            np.testing.assert_allclose(got[role][key], value, rtol=0, atol=atol, err_msg=f"{role} {key}")


def assert_groups_equal(got: dict, want: dict) -> None:
    for role in ROLES:
        assert got[role].keys() == want[role].keys()
        for key, value in want[role].items():
            np.testing.assert_array_equal(got[role][key], value, err_msg=f"{role} {key}")


# ---------------------------------------------------------------- cross-backend parity


@pytest.fixture(scope="module")
def three_steps(pair):
    """Each backend after one epoch of three steps (the last a partial batch of 8)."""
    plan, weights = make_gan_plan(pair[0]), start_weights(pair)
    out = {}
    for backend in BACKENDS:
        trainer = run_epochs(new_trainer(backend, pair, plan, weights), images(), [0])
        out[backend] = {"weights": trainer.get_weights(), "pulled": trainer.pull(),
                        "opt": trainer.get_optimizer_state()}
    return out


def test_both_backends_make_the_same_three_steps(three_steps, pair):
    jax_run, torch_run = three_steps["jax"], three_steps["torch"]
    assert_groups_close(torch_run["weights"], jax_run["weights"])  # BatchNorm moving statistics included
    moved = start_weights(pair)["generator"]["batch_norm_1/moving_mean"]
    assert not np.array_equal(jax_run["weights"]["generator"]["batch_norm_1/moving_mean"], moved)
    assert_groups_close(torch_run["opt"], jax_run["opt"], atol=1e-6)
    for role in ROLES:
        assert int(jax_run["opt"][role]["adam/step"]) == int(torch_run["opt"][role]["adam/step"]) == 3


def test_pulled_metrics_agree_and_make_sense(three_steps):
    for backend, run in three_steps.items():
        pulled = run["pulled"]
        assert pulled["samples"] == SAMPLES and pulled["bad_step"] == -1 and pulled["bad_value"] is None, backend
        assert np.isfinite(pulled["d_loss"]) and np.isfinite(pulled["g_loss"]), backend
        assert 0 < pulled["d_real"] < 1 and 0 < pulled["d_fake"] < 1, backend
    for name in ("d_loss", "g_loss", "d_real", "d_fake"):
        assert three_steps["torch"]["pulled"][name] == pytest.approx(three_steps["jax"]["pulled"][name], rel=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_pull_empties_the_window(backend, pair):
    trainer = run_epochs(new_trainer(backend, pair, make_gan_plan(pair[0]), start_weights(pair)), images(), [0], 1)
    assert trainer.pull()["samples"] == BATCH
    assert trainer.pull()["samples"] == 0


# ---------------------------------------------------------------- the step's semantics


def reference_step(pair, weights, x, lr: float):
    """One SGD GAN step by plain torch autograd on freshly built nets: D on
    real and detached fakes (sum of two means), then G through the updated D."""
    generator, discriminator = pair
    g_net = pytorch.build(generator, weights["generator"])
    d_net = pytorch.build(discriminator, weights["discriminator"])
    z = torch.from_numpy(noise.gaussian(SEED, noise.STREAM_LATENT, 0, (BATCH, LATENT)))
    real = torch.from_numpy(x[order_of(0)[:BATCH]])
    fake = g_net.train()(z)
    d_net.train()
    d_loss = (torch.nn.functional.binary_cross_entropy(d_net(real), torch.ones(BATCH, 1))
              + torch.nn.functional.binary_cross_entropy(d_net(fake.detach()), torch.zeros(BATCH, 1)))
    d_params = [p for p in d_net.parameters()]
    with torch.no_grad():
        for p, g in zip(d_params, torch.autograd.grad(d_loss, d_params)):
            p -= lr * g
    g_loss = torch.nn.functional.binary_cross_entropy(d_net(fake), torch.ones(BATCH, 1))
    g_params = [p for p in g_net.parameters()]
    with torch.no_grad():
        for p, g in zip(g_params, torch.autograd.grad(g_loss, g_params)):
            p -= lr * g
    trainable = lambda model: {k for k, w in model.weight_specs().items() if w.trainable}  # noqa: E731
    return {"generator": pytorch.convert.from_native(generator, g_net, only=trainable(generator)),
            "discriminator": pytorch.convert.from_native(discriminator, d_net, only=trainable(discriminator))}


@pytest.mark.parametrize("backend", BACKENDS)
def test_one_step_is_the_dcgan_step(backend, pair):
    """With plain SGD the new weights are the old minus lr times the
    reference gradients: D's from real and detached fakes (G untouched by
    D's loss), G's from the non-saturating loss through the updated D."""
    lr = 0.1
    plan = make_gan_plan(pair[0], Call("sgd", {**OPTIMIZERS["sgd"], "lr": lr}))
    weights, x = start_weights(pair), images()
    got = run_epochs(new_trainer(backend, pair, plan, weights), x, [0], 1).get_weights()
    want = reference_step(pair, weights, x, lr)
    for role in ROLES:
        for key, value in want[role].items():
            np.testing.assert_allclose(got[role][key], value, rtol=1e-5, atol=1e-6, err_msg=f"{role} {key}")
            assert not np.array_equal(value, weights[role][key]), f"{role} {key} did not move"


# ---------------------------------------------------------------- checkpoints


@pytest.mark.parametrize("backend", BACKENDS)
def test_weights_and_optimizer_state_round_trip_exactly(backend, pair):
    trainer = run_epochs(new_trainer(backend, pair, make_gan_plan(pair[0]), start_weights(pair)), images(), [0])
    weights, state = trainer.get_weights(), trainer.get_optimizer_state()
    trainer.set_weights(weights)
    trainer.set_optimizer_state(state)
    assert_groups_equal(trainer.get_weights(), weights)
    assert_groups_equal(trainer.get_optimizer_state(), state)


@pytest.mark.parametrize("resume_on", BACKENDS)
@pytest.mark.parametrize("backend", BACKENDS)
def test_a_restored_trainer_goes_on_as_the_uninterrupted_one(backend, resume_on, pair):
    plan, x = make_gan_plan(pair[0]), images()
    whole = run_epochs(new_trainer(resume_on, pair, plan, start_weights(pair)), x, [0, 1]).get_weights()
    first = run_epochs(new_trainer(backend, pair, plan, start_weights(pair)), x, [0])
    weights, state = first.get_weights(), first.get_optimizer_state()
    resumed = new_trainer(resume_on, pair, plan, start_weights(pair))  # weights replaced below
    resumed.set_weights(weights)
    resumed.set_optimizer_state(state)
    run_epochs(resumed, x, [1])
    if backend == resume_on:
        assert_groups_equal(resumed.get_weights(), whole)
    else:
        assert_groups_close(resumed.get_weights(), whole)


# ---------------------------------------------------------------- generate


@pytest.mark.parametrize("backend", BACKENDS)
def test_generate_is_inference_mode_and_deterministic(backend, pair):
    trainer = run_epochs(new_trainer(backend, pair, make_gan_plan(pair[0]), start_weights(pair)), images(), [0])
    weights = trainer.get_weights()
    z = noise.gaussian(SEED, noise.STREAM_SAMPLES, 0, (5, LATENT))
    first, second = trainer.generate(z), trainer.generate(z)
    assert first.shape == (5, 1, 8, 8) and first.dtype == np.float32
    np.testing.assert_array_equal(first, second)
    assert_groups_equal(trainer.get_weights(), weights)  # moving statistics untouched
    # one sample alone gives the same picture: BatchNorm uses the moving statistics
    np.testing.assert_allclose(trainer.generate(z[:1])[0], first[0], rtol=0, atol=1e-6)
    np.testing.assert_allclose(first, specc.run(pair[0], weights["generator"], z, backend=backend),
                               rtol=0, atol=1e-6)


# ---------------------------------------------------------------- non-finite losses


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_first_non_finite_step_is_named(backend, pair):
    x = images()
    x[order_of(0)[BATCH + 3]] = np.nan  # in the second batch
    trainer = run_epochs(new_trainer(backend, pair, make_gan_plan(pair[0]), start_weights(pair)), x, [0])
    pulled = trainer.pull()
    assert pulled["bad_step"] == 1 and pulled["bad_value"] == "nan"


@pytest.mark.parametrize("backend", BACKENDS)
def test_mismatched_models_are_refused(backend, pair):
    generator, discriminator = pair
    with pytest.raises(ValueError, match="latent"):
        BACKENDS[backend].gan_trainer(generator, discriminator, make_gan_plan(generator),
                                      specc.init_weights(generator), specc.init_weights(discriminator), LATENT + 1)
