"""The cost of data parallelism on one machine: `specc train --devices 2`
against `--devices 1`, same spec, data and batch, interleaved.

On a CPU machine the devices share its cores (JAX: host devices of one
process; PyTorch: gloo worker processes), so this measures what splitting a
batch costs (the all-reduce of gradients, BatchNorm moments, smaller
per-device matmuls), not a speed-up. Each run is one `specc train` process;
samples/s is its `train_samples_per_second` (steady state, after the
compiling steps).

    python benchmarks/parallel_overhead.py                    # lenet, jax and torch, 2 rounds
    python benchmarks/parallel_overhead.py --spec specs/mlp.spec --limit 24000 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def one_run(spec: str, backend: str, devices: int, limit: int, epochs: int, out: Path) -> float:
    subprocess.run([sys.executable, "-m", "specc", "train", spec, "--backend", backend, "--devices", str(devices),
                    "--limit", str(limit), "--epochs", str(epochs), "--quiet", "--out", str(out)],
                   check=True, stdout=subprocess.DEVNULL)
    result = json.loads((out / "result.json").read_text())
    assert result["devices"] == devices
    return float(result["train_samples_per_second"])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--spec", default=str(ROOT / "specs" / "lenet.spec"))
    p.add_argument("--backends", default="jax,torch")
    p.add_argument("--devices", type=int, default=2)
    p.add_argument("--limit", type=int, default=12_800)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--rounds", type=int, default=2)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for backend in args.backends.split(","):
            rates: dict[int, list[float]] = {1: [], args.devices: []}
            for r in range(args.rounds):
                order = (1, args.devices) if r % 2 == 0 else (args.devices, 1)
                for n in order:
                    rates[n].append(one_run(args.spec, backend, n, args.limit, args.epochs,
                                            Path(tmp) / f"{backend}-{n}-{r}"))
            one, many = statistics.median(rates[1]), statistics.median(rates[args.devices])
            print(json.dumps({"spec": Path(args.spec).name, "backend": backend, "samples_per_s_1": one,
                              f"samples_per_s_{args.devices}": many, "ratio": round(many / one, 3),
                              "rounds": args.rounds}), flush=True)


if __name__ == "__main__":
    main()
