"""Accuracy on real MNIST: the seed specs trained with `specc train` on both
backends, each run in its own process exactly as a user runs it.

    python benchmarks/accuracy.py                      # LeNet, MLP, perceptron on jax and torch
    python benchmarks/accuracy.py --only lenet --backends torch

Targets (issue 4): LeNet with Adam for 3 epochs >= 99.0%, the MLP >= 97.5%,
the perceptron >= 92%. The MLP and the perceptron train for their train
block's epochs (20). Prints one row per run (test accuracy, train time,
samples/s after the compiling epoch) and exits 1 if a target is missed.
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
        subprocess.run(cmd, check=True)
        return json.loads((Path(out) / "result.json").read_text())


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", nargs="*", choices=sorted(RUNS), default=list(RUNS))
    p.add_argument("--backends", nargs="*", choices=("jax", "torch"), default=["jax", "torch"])
    args = p.parse_args(argv)

    print("| spec | backend | epochs | test accuracy | target | train time | samples/s |")
    print("|---|---|---|---|---|---|---|")
    missed = 0
    for name in args.only:
        spec, flags, target = RUNS[name]
        for backend in args.backends:
            r = train(spec, flags, backend)
            ok = r["test_accuracy"] >= target
            missed += not ok
            print(f"| {name} | {backend} | {r['epochs']} | {100 * r['test_accuracy']:.2f}% "
                  f"| {100 * target:.1f}% {'ok' if ok else 'MISSED'} | {r['train_seconds']:.0f} s "
                  f"| {r['train_samples_per_second']:,.0f} |", flush=True)
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
