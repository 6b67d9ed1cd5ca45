"""Accuracy on real MNIST: the seed specs trained with `specc train` on both
backends, each run in its own process exactly as a user runs it.

    python benchmarks/accuracy.py                      # LeNet, MLP, perceptron on jax and torch
    python benchmarks/accuracy.py --only lenet --backends torch
    python benchmarks/accuracy.py --keras              # add Keras 3 fit() on the same data as a reference

Targets (issue 4): LeNet with Adam for 3 epochs >= 99.0%, the MLP >= 97.5%,
the perceptron >= 92%. The MLP and the perceptron train for their train
block's epochs (20). Prints one markdown row per run (test accuracy, train
time, samples/s after the first, compiling, steps) and exits 1 if a target is
missed.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# name: (spec, extra `specc train` flags, target test accuracy)
RUNS = {
    "lenet": ("specs/lenet.spec", ["--epochs", "3"], 0.990),
    "mlp": ("specs/mlp.spec", [], 0.975),
    "perceptron": ("specs/perceptron.spec", [], 0.92),
}


def train(spec: str, flags: list[str], backend: str) -> dict:
    with tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, "-m", "specc", "train", str(ROOT / spec), "--backend", backend,
               "--out", out, "--quiet", *flags]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)  # --quiet prints result.json; read the file
        return json.loads((Path(out) / "result.json").read_text())


def keras_reference(name: str, epochs: int) -> dict:
    """The same model and train block written by hand in Keras 3 (jax backend,
    channels-last as Keras users write it), fit on the same arrays."""
    import os
    import time

    os.environ.setdefault("KERAS_BACKEND", "jax")
    import keras
    from keras import layers

    import specc
    from specc import data

    spec, _, _ = RUNS[name]
    model = specc.load(ROOT / spec)[name]
    ds = data.load_dataset(specc.ir.Call("mnist", {"validation_split": 0.0}), model.input_shape)
    x_train, x_test = ds.x_train, ds.x_test
    if name == "lenet":
        x_train, x_test = x_train.transpose(0, 2, 3, 1), x_test.transpose(0, 2, 3, 1)
        body = [layers.Conv2D(20, 5, padding="same", activation="relu"), layers.MaxPooling2D(2),
                layers.Conv2D(50, 5, padding="same", activation="relu"), layers.MaxPooling2D(2),
                layers.Flatten(), layers.Dense(500, activation="relu"), layers.Dense(10, activation="softmax")]
        optimizer = keras.optimizers.Adam(1e-3)
    elif name == "mlp":
        body = [layers.Dense(128, activation="relu"), layers.Dropout(0.3), layers.Dense(128, activation="relu"),
                layers.Dropout(0.3), layers.Dense(10, activation="softmax")]
        optimizer = keras.optimizers.Adam(1e-3)
    else:
        body = [layers.Dense(10, activation="softmax")]
        optimizer = keras.optimizers.SGD(0.1)
    keras.utils.set_random_seed(0)
    net = keras.Sequential([keras.Input(x_train.shape[1:]), *body])
    net.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    start = time.perf_counter()
    net.fit(x_train, ds.y_train, batch_size=128, epochs=epochs, validation_split=0.2, verbose=0)
    seconds = time.perf_counter() - start
    loss, accuracy = net.evaluate(x_test, ds.y_test, batch_size=128, verbose=0)
    return {"epochs": epochs, "test_accuracy": accuracy, "train_seconds": seconds,
            "train_samples_per_second": epochs * 0.8 * len(x_train) / seconds}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", nargs="*", choices=sorted(RUNS), default=list(RUNS))
    p.add_argument("--backends", nargs="*", choices=("jax", "torch"), default=["jax", "torch"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0], help="one run per seed (--seed)")
    p.add_argument("--keras", action="store_true", help="add Keras 3 fit() (jax backend) as a reference row")
    args = p.parse_args(argv)

    print("| spec | backend | seed | epochs | test accuracy | target | train time | samples/s |")
    print("|---|---|---|---|---|---|---|---|")
    missed = 0
    for name in args.only:
        spec, flags, target = RUNS[name]
        for backend in args.backends:
            for seed in args.seeds:
                r = train(spec, [*flags, "--seed", str(seed)], backend)
                ok = r["test_accuracy"] >= target
                missed += not ok
                print(f"| {name} | {backend} | {seed} | {r['epochs']} | {100 * r['test_accuracy']:.2f}% "
                      f"| {100 * target:.1f}% {'ok' if ok else 'MISSED'} | {r['train_seconds']:.0f} s "
                      f"| {r['train_samples_per_second']:,.0f} |", flush=True)
        if args.keras:
            r = keras_reference(name, int(flags[1]) if flags else 20)
            print(f"| {name} | keras fit (jax) | 0 | {r['epochs']} | {100 * r['test_accuracy']:.2f}% | reference "
                  f"| {r['train_seconds']:.0f} s | {r['train_samples_per_second']:,.0f} (incl. compile) |", flush=True)
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
