"""The recipe figures of the README, by the CLI as a user runs it.

Trains a spec for the first of `--epochs` (a comma list, e.g. 1,5,20), then
resumes the same run directory to each later count, reading result.json after
each: a GAN's mnist_is / mnist_fid, an autoencoder's test_loss, with the
seconds spent training so far. One line of JSON per (spec, backend, epochs)
goes to stdout and to --out.

    python benchmarks/recipe_figures.py specs/gan.spec --backends jax,torch --epochs 1,5,20
    python benchmarks/recipe_figures.py benchmarks/specs/keras_example_autoencoder.spec --epochs 1,10
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

KEEP = ("mnist_is", "mnist_fid", "test_loss", "test_accuracy", "train_seconds", "train_samples_per_second")


def run(spec: str, backend: str, epochs: list[int], root: Path, extra: list[str]) -> list[dict]:
    run_dir = root / f"{Path(spec).stem}-{backend}"
    rows = []
    for i, count in enumerate(epochs):
        where = ["--out", str(run_dir)] if i == 0 else ["--resume", str(run_dir)]
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "specc", "train", spec, "--backend", backend, "--epochs", str(count),
                        "--quiet", *where, *extra], check=True, stdout=subprocess.DEVNULL)
        result = json.loads((run_dir / "result.json").read_text())
        rows.append({"spec": spec, "backend": backend, "epochs": result["epochs"],
                     **{k: result[k] for k in KEEP if result.get(k) is not None},
                     "wall_seconds_this_call": round(time.perf_counter() - started, 1)})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("spec")
    p.add_argument("--backends", default="jax,torch")
    p.add_argument("--epochs", default="1,5")
    p.add_argument("--out", default=None, help="append the JSON lines to this file")
    p.add_argument("--runs", default=None, help="keep the run directories here (default: a temporary one)")
    args, extra = p.parse_known_args()
    epochs = sorted(int(e) for e in args.epochs.split(","))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.runs or tmp)
        root.mkdir(parents=True, exist_ok=True)
        for backend in args.backends.split(","):
            rows = run(args.spec, backend, epochs, root, extra)
            if args.out:
                with open(args.out, "a") as f:
                    f.writelines(json.dumps(row) + "\n" for row in rows)


if __name__ == "__main__":
    main()
