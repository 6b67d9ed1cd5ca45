"""Training overhead: `specc train specs/lenet.spec` (or specs/mlp.spec)
against the best idiomatic hand-written Flax+optax and PyTorch loops of the
same network, same data, batch and machine, in one process, interleaved
(specc, hand-written, specc, ...) to share noise.

    python benchmarks/train_overhead.py --backend jax --samples 12000 --repeats 3
    python benchmarks/train_overhead.py --backend torch --model mlp --samples 48000

Both sides keep the data on the device, gather batches there, use Adam(1e-3)
and the fused softmax cross-entropy, and skip their first (compiling) steps.
Prints samples/s and the ratio specc / hand-written (target >= 0.95).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
BATCH, WARMUP = 128, 5


def spec_path(name: str) -> Path:
    return ROOT / "specs" / f"{name}.spec"


def mnist(name: str, samples: int):
    import specc
    from specc import data

    model = specc.load(spec_path(name))[name]
    ds = data.load_dataset(specc.ir.Call("mnist", {"validation_split": 0.0}), model.input_shape, limit=samples)
    return ds.x_train, ds.y_train


def timed_epochs(step, sync, n: int, epochs: int) -> float:
    """Samples/s over `epochs` epochs of full batches, excluding the first WARMUP steps."""
    steps = n // BATCH
    for i in range(WARMUP):
        step(0, i)
    sync()
    start = time.perf_counter()
    done = 0
    for epoch in range(epochs):
        for i in range(WARMUP if epoch == 0 else 0, steps):
            step(epoch, i)
            done += BATCH
    sync()
    return done / (time.perf_counter() - start)


def flax_hand_written(name: str, x: np.ndarray, y: np.ndarray, epochs: int) -> float:
    import flax.linen as nn
    import jax
    import jax.numpy as jnp
    import optax
    from jax import lax

    class LeNet(nn.Module):
        @nn.compact
        def __call__(self, x, train: bool):
            x = nn.relu(nn.Conv(20, (5, 5), padding="SAME")(x))
            x = nn.max_pool(x, (2, 2), (2, 2))
            x = nn.relu(nn.Conv(50, (5, 5), padding="SAME")(x))
            x = nn.max_pool(x, (2, 2), (2, 2))
            x = x.reshape(x.shape[0], -1)
            x = nn.relu(nn.Dense(500)(x))
            return nn.Dense(10)(x)

    class MLP(nn.Module):
        @nn.compact
        def __call__(self, x, train: bool):
            for _ in range(2):
                x = nn.Dropout(0.3, deterministic=not train)(nn.relu(nn.Dense(128)(x)))
            return nn.Dense(10)(x)

    net = LeNet() if name == "lenet" else MLP()
    if x.ndim == 4:
        x = np.ascontiguousarray(x.transpose(0, 2, 3, 1))  # NHWC, as Flax code would hold it
    x_dev = jax.device_put(x)
    y_dev = jax.device_put(y.astype(np.int32))
    params = net.init(jax.random.key(0), x_dev[:1], False)["params"]
    opt = optax.adam(1e-3)
    state = {"params": params, "opt": opt.init(params), "step": jnp.zeros([], jnp.int32)}
    key = jax.random.key(1)

    @jax.jit
    def train_step(state, order, start):
        idx = lax.dynamic_slice_in_dim(order, start, BATCH)
        xb, yb = x_dev[idx], y_dev[idx]
        rngs = {"dropout": jax.random.fold_in(key, state["step"])}

        def loss_fn(p):
            logits = net.apply({"params": p}, xb, True, rngs=rngs)
            return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()

        loss, grads = jax.value_and_grad(loss_fn)(state["params"])
        updates, o = opt.update(grads, state["opt"], state["params"])
        return {"params": optax.apply_updates(state["params"], updates), "opt": o, "step": state["step"] + 1}

    train_step = jax.jit(train_step.__wrapped__, donate_argnums=(0,))
    orders = [jax.device_put(np.random.default_rng(e).permutation(len(x)).astype(np.int32)) for e in range(epochs)]
    box = {"state": state}

    def step(epoch, i):
        box["state"] = train_step(box["state"], orders[epoch], jnp.int32(i * BATCH))

    return timed_epochs(step, lambda: jax.block_until_ready(box["state"]), len(x), epochs)


def torch_hand_written(name: str, x: np.ndarray, y: np.ndarray, epochs: int) -> float:
    import torch
    import torch.nn.functional as F
    from torch import nn

    torch.manual_seed(0)
    if name == "lenet":
        net = nn.Sequential(
            nn.Conv2d(1, 20, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(20, 50, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(2450, 500), nn.ReLU(), nn.Linear(500, 10),
        )
    else:
        net = nn.Sequential(nn.Linear(784, 128), nn.ReLU(), nn.Dropout(0.3), nn.Linear(128, 128), nn.ReLU(),
                            nn.Dropout(0.3), nn.Linear(128, 10))
    net.train()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    x_dev, y_dev = torch.from_numpy(x), torch.from_numpy(y.astype(np.int64))
    orders = [torch.from_numpy(np.random.default_rng(e).permutation(len(x))) for e in range(epochs)]

    def step(epoch, i):
        idx = orders[epoch][i * BATCH:(i + 1) * BATCH]
        loss = F.cross_entropy(net(x_dev.index_select(0, idx)), y_dev.index_select(0, idx))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return timed_epochs(step, lambda: None, len(x), epochs)


def specc_train(name: str, backend: str, samples: int, epochs: int) -> float:
    from specc.runner import Options, train_model

    with tempfile.TemporaryDirectory() as out:
        run = train_model(str(spec_path(name)), name, Options(backend=backend, epochs=epochs, limit=samples, quiet=True,
                                                      out=out))
    return run.result["train_samples_per_second"]


def keras_fit(name: str, x: np.ndarray, y: np.ndarray, epochs: int) -> float | None:
    try:
        import os

        os.environ.setdefault("KERAS_BACKEND", "jax")
        import keras
    except ImportError:
        return None
    L = keras.layers
    if name == "lenet":
        x = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
        body = [L.Conv2D(20, 5, padding="same", activation="relu"), L.MaxPooling2D(2),
                L.Conv2D(50, 5, padding="same", activation="relu"), L.MaxPooling2D(2),
                L.Flatten(), L.Dense(500, activation="relu"), L.Dense(10)]
    else:
        body = [L.Dense(128, activation="relu"), L.Dropout(0.3), L.Dense(128, activation="relu"), L.Dropout(0.3),
                L.Dense(10)]
    model = keras.Sequential([keras.Input(x.shape[1:]), *body])
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x[: BATCH * WARMUP], y[: BATCH * WARMUP], batch_size=BATCH, epochs=1, verbose=0)  # compile
    start = time.perf_counter()
    model.fit(x, y, batch_size=BATCH, epochs=epochs, verbose=0, shuffle=True)
    return epochs * len(x) / (time.perf_counter() - start)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backend", choices=("jax", "torch"), default="jax")
    p.add_argument("--model", choices=("lenet", "mlp"), default="lenet")
    p.add_argument("--samples", type=int, default=12000, help="training samples per epoch")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--keras", action="store_true", help="add Keras 3 fit() (jax backend) as a third column")
    args = p.parse_args(argv)

    x, y = mnist(args.model, args.samples)
    hand = flax_hand_written if args.backend == "jax" else torch_hand_written
    ours, theirs = [], []
    for _ in range(args.repeats):
        ours.append(specc_train(args.model, args.backend, args.samples, args.epochs))
        theirs.append(hand(args.model, x, y, args.epochs))
    s, h = statistics.median(ours), statistics.median(theirs)
    print(f"backend {args.backend}: {args.model}, batch {BATCH}, {args.samples} samples x {args.epochs} epochs, "
          f"median of {args.repeats}")
    print(f"  specc train      {s:10,.0f} samples/s   runs: {', '.join(f'{v:,.0f}' for v in ours)}")
    print(f"  hand-written     {h:10,.0f} samples/s   runs: {', '.join(f'{v:,.0f}' for v in theirs)}")
    if args.keras and args.backend == "jax":
        k = keras_fit(args.model, x, y, args.epochs)
        if k is not None:
            print(f"  keras fit (jax)  {k:10,.0f} samples/s")
    print(f"  ratio specc / hand-written: {s / h:.3f}  (target >= 0.95)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
