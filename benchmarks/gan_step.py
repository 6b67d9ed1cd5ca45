"""GAN step speed: specc's GAN trainer (the step `specc train specs/gan.spec`
runs) against hand-written DCGAN loops of the same two models, as a user
would write them: Flax linen + optax under one jax.jit, and torch
nn.Modules + torch.optim.Adam in the PyTorch DCGAN example's order.

    python benchmarks/gan_step.py                      # both backends
    python benchmarks/gan_step.py --backend torch --steps 50 --repeats 5

Every side: MNIST scaled to [-1, 1] on the device, batches gathered there by
a shuffled order, batch 128, Adam(2e-4, beta1=0.5), one D update on a real
and a generated batch then one non-saturating G update per step, the fused
logits BCE, no host sync inside the timed steps. Each side is built and
warmed up (compiled) first; then rounds of `--steps` timed steps run
interleaved (specc jax, Flax, specc torch, torch, ...) to share the noise of
a busy machine. Prints the median samples/s of the rounds and the ratios
specc / hand-written (target >= 0.95).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
BATCH, LATENT, LR, BETA1, WARMUP = 128, 100, 2e-4, 0.5, 5


def load_pair_and_data(steps: int, channels_last: bool = True):
    import dataclasses

    import specc
    from specc import data
    from specc.plan import SpeedChoices, make_plan

    program = specc.load(ROOT / "specs" / "gan.spec")
    generator, discriminator = program["generator"], program["discriminator"]
    train = program.trains["generator"].replace(batch=BATCH)
    n = BATCH * steps
    ds = data.load_dataset(specc.ir.Call("mnist", {"range": [-1, 1]}), discriminator.input_shape, limit=n)
    plan = dataclasses.replace(make_plan(generator, train, n), speed=SpeedChoices(channels_last=channels_last))
    return generator, discriminator, plan, ds.x_train


def orders(n: int, rounds: int) -> list[np.ndarray]:
    return [np.random.default_rng(r).permutation(n) for r in range(rounds)]


# ---------------------------------------------------------------- specc


def specc_side(backend: str, pair_and_data):
    """`run(round)` runs one epoch of timed steps and syncs; warmed up first."""
    import specc
    from specc.backend import get

    generator, discriminator, plan, x = pair_and_data
    trainer = get(backend).gan_trainer(generator, discriminator, plan, specc.init_weights(generator, 0),
                                       specc.init_weights(discriminator, 0), LATENT)
    data = trainer.put(x)
    steps = len(x) // BATCH

    def run(order: np.ndarray, count: int) -> None:
        trainer.begin_epoch(data, order, 0)
        for i in range(count):
            trainer.step(i)
        trainer.pull()  # the sync

    run(orders(len(x), 1)[0], min(WARMUP, len(x) // BATCH))
    return lambda order: run(order, steps)


# ---------------------------------------------------------------- hand-written Flax


def flax_side(pair_and_data):
    import flax.linen as nn
    import jax
    import jax.numpy as jnp
    import optax
    from jax import lax

    class Generator(nn.Module):
        @nn.compact
        def __call__(self, z, train: bool):
            x = nn.Dense(7 * 7 * 128)(z)
            x = nn.BatchNorm(use_running_average=not train, momentum=0.99, epsilon=1e-3)(x)
            x = nn.leaky_relu(x, 0.01).reshape(-1, 7, 7, 128)
            x = nn.leaky_relu(nn.ConvTranspose(64, (3, 3), strides=(2, 2), padding="SAME")(x), 0.01)
            return jnp.tanh(nn.ConvTranspose(1, (3, 3), strides=(2, 2), padding="SAME")(x))

    class Discriminator(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = nn.leaky_relu(nn.Conv(64, (3, 3), strides=(2, 2), padding="SAME")(x), 0.01)
            return nn.Dense(1)(x.reshape(x.shape[0], -1))  # logits

    x = pair_and_data[3]
    x_dev = jax.device_put(np.ascontiguousarray(x.transpose(0, 2, 3, 1)))  # NHWC, as Flax code holds images
    G, D = Generator(), Discriminator()
    g_vars = G.init(jax.random.key(0), jnp.zeros((1, LATENT)), False)
    d_params = D.init(jax.random.key(1), x_dev[:1])["params"]
    tx = optax.adam(LR, b1=BETA1)
    state = {"g": g_vars["params"], "stats": g_vars["batch_stats"], "d": d_params,
             "g_opt": tx.init(g_vars["params"]), "d_opt": tx.init(d_params), "step": jnp.zeros([], jnp.int32)}
    key = jax.random.key(2)

    def bce(logits, label):
        return optax.sigmoid_binary_cross_entropy(logits, jnp.full_like(logits, label)).mean()

    def train_step(state, order, start):
        real = x_dev[lax.dynamic_slice_in_dim(order, start, BATCH)]
        z = jax.random.normal(jax.random.fold_in(key, state["step"]), (BATCH, LATENT))

        def d_loss_fn(d):
            fake, updates = G.apply({"params": state["g"], "batch_stats": state["stats"]}, z, True,
                                    mutable=["batch_stats"])
            fake = lax.stop_gradient(fake)
            return bce(D.apply({"params": d}, real), 1.0) + bce(D.apply({"params": d}, fake), 0.0), updates

        (_, updates), d_grads = jax.value_and_grad(d_loss_fn, has_aux=True)(state["d"])
        d_step, d_opt = tx.update(d_grads, state["d_opt"], state["d"])
        d = optax.apply_updates(state["d"], d_step)

        def g_loss_fn(g):
            fake, _ = G.apply({"params": g, "batch_stats": state["stats"]}, z, True, mutable=["batch_stats"])
            return bce(D.apply({"params": d}, fake), 1.0)

        g_grads = jax.grad(g_loss_fn)(state["g"])
        g_step, g_opt = tx.update(g_grads, state["g_opt"], state["g"])
        return {"g": optax.apply_updates(state["g"], g_step), "stats": updates["batch_stats"], "d": d,
                "g_opt": g_opt, "d_opt": d_opt, "step": state["step"] + 1}

    train_step = jax.jit(train_step, donate_argnums=(0,))
    box = {"state": state}

    def run(order: np.ndarray, count: int) -> None:
        order = jax.device_put(order.astype(np.int32))
        for i in range(count):
            box["state"] = train_step(box["state"], order, jnp.int32(i * BATCH))
        jax.block_until_ready(box["state"])

    run(orders(len(x), 1)[0], min(WARMUP, len(x) // BATCH))
    return lambda order: run(order, len(x) // BATCH)


# ---------------------------------------------------------------- hand-written PyTorch


def torch_side(pair_and_data):
    import torch
    from torch import nn

    torch.manual_seed(0)
    G = nn.Sequential(
        nn.Linear(LATENT, 7 * 7 * 128), nn.BatchNorm1d(7 * 7 * 128, eps=1e-3, momentum=0.01), nn.LeakyReLU(0.01),
        nn.Unflatten(1, (128, 7, 7)),
        nn.ConvTranspose2d(128, 64, 3, stride=2, padding=1, output_padding=1), nn.LeakyReLU(0.01),
        nn.ConvTranspose2d(64, 1, 3, stride=2, padding=1, output_padding=1), nn.Tanh(),
    ).train()
    D = nn.Sequential(nn.Conv2d(1, 64, 3, stride=2, padding=1), nn.LeakyReLU(0.01), nn.Flatten(),
                      nn.Linear(64 * 14 * 14, 1)).train()  # logits, for BCEWithLogitsLoss
    criterion = nn.BCEWithLogitsLoss()
    opt_g = torch.optim.Adam(G.parameters(), lr=LR, betas=(BETA1, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), lr=LR, betas=(BETA1, 0.999))
    x = torch.from_numpy(pair_and_data[3])
    ones, zeros = torch.ones(BATCH, 1), torch.zeros(BATCH, 1)

    def step(order: torch.Tensor, i: int) -> None:
        real = x.index_select(0, order[i * BATCH:(i + 1) * BATCH])
        fake = G(torch.randn(BATCH, LATENT))
        opt_d.zero_grad()
        d_loss = criterion(D(real), ones) + criterion(D(fake.detach()), zeros)
        d_loss.backward()
        opt_d.step()
        opt_g.zero_grad()
        g_loss = criterion(D(fake), ones)
        g_loss.backward()
        opt_g.step()

    def run(order: np.ndarray, count: int) -> None:
        order = torch.from_numpy(order)
        for i in range(count):
            step(order, i)

    run(orders(len(x), 1)[0], min(WARMUP, len(x) // BATCH))
    return lambda order: run(order, len(x) // BATCH)


# ---------------------------------------------------------------- main


def timed(run, order: np.ndarray, samples: int) -> float:
    start = time.perf_counter()
    run(order)
    return samples / (time.perf_counter() - start)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backend", choices=("jax", "torch", "both"), default="both")
    p.add_argument("--steps", type=int, default=100, help="timed steps per round")
    p.add_argument("--repeats", type=int, default=3, help="rounds; the median is reported")
    p.add_argument("--no-channels-last", action="store_true", help="specc torch: as `specc train --no-channels-last`")
    args = p.parse_args(argv)

    pair_and_data = load_pair_and_data(args.steps, channels_last=not args.no_channels_last)
    backends = ("jax", "torch") if args.backend == "both" else (args.backend,)
    hand = {"jax": ("flax", flax_side), "torch": ("torch", torch_side)}
    sides = {}
    for backend in backends:
        sides[f"specc {backend}"] = specc_side(backend, pair_and_data)
        name, build = hand[backend]
        sides[f"hand-written {name}"] = build(pair_and_data)
    samples = args.steps * BATCH
    rates = {name: [] for name in sides}
    for order in orders(samples, args.repeats):
        for name, run in sides.items():
            rates[name].append(timed(run, order, samples))
    print(f"GAN step, specs/gan.spec, batch {BATCH}, Adam({LR}, beta1={BETA1}), {args.steps} steps x "
          f"{args.repeats} rounds, interleaved, median")
    for name, values in rates.items():
        print(f"  {name:22s} {statistics.median(values):9,.0f} samples/s   rounds: "
              f"{', '.join(f'{v:,.0f}' for v in values)}")
    for backend in backends:
        hand_name = f"hand-written {hand[backend][0]}"
        ratio = statistics.median(rates[f"specc {backend}"]) / statistics.median(rates[hand_name])
        print(f"  ratio specc {backend} / {hand_name}: {ratio:.3f}  (target >= 0.95)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
