"""`specc train` against the shared reference training loops, interleaved.

The reference loops (`../shared/bench/bench_flax.py`, `bench_torch.py`) are the
idiomatic hand-written Flax+optax and PyTorch loops a user would write: the
yardstick for every speed claim. This script runs them and `specc train` on
the same model, batch (128), optimiser (Adam 1e-3) and MNIST data, each in its
own process, alternating which goes first in each round so that drift on this
shared machine falls on both, and prints samples/s, the ratio specc/reference
(median of the per-round ratios) and each process's peak resident memory.

Steady-state rates on both sides: the reference loop times `--steps` steps
after `--warmup` warm-up steps (compilation included in the warm-up);
`specc train` reports `train_samples_per_second`, timed between its progress
pulls after its first 5 (compiling) steps, over one epoch of
`(steps + warmup) * 128` samples (`--limit`). The benchmark specs in
benchmarks/specs/ are the reference loops' models, without a validation split.

    python benchmarks/reference_loops.py                      # lenet, jax and torch, 3 rounds
    python benchmarks/reference_loops.py --models lenet mlp lstm --rounds 5
    python benchmarks/reference_loops.py --models resnet_mnist   # BatchNorm: our reference loops
    python benchmarks/reference_loops.py --json results.jsonl

Run it on an otherwise idle machine: PyTorch's threads collapse when another
process is busy.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SPECS = ROOT / "benchmarks" / "specs"
REFERENCE = {"jax": "bench_flax.py", "torch": "bench_torch.py"}
# The shared loops have no BatchNorm network: resnet_mnist's reference loops
# are written beside them, in their style (benchmarks/resnet_reference.py).
OWN_REFERENCE = {"resnet_mnist": "resnet_reference.py"}
FRAMEWORK = {"jax": "flax", "torch": "torch"}


def default_bench_dir() -> Path:
    return Path(os.environ.get("SPECC_REFERENCE_BENCH", ROOT.parent / "shared" / "bench"))


def measure(cmd: list[str], env: dict | None = None) -> tuple[str, float]:
    """stdout and the process's own peak RSS in MiB (os.wait4's rusage)."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, text=True, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if proc.returncode != 0:
            raise SystemExit(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{err.read()[-2000:]}")
        return out.read(), usage.ru_maxrss / 1024.0


def reference(bench_dir: Path, backend: str, model: str, steps: int, warmup: int) -> dict:
    if model in OWN_REFERENCE:  # a network the shared loops lack: our script in their style
        script = [str(ROOT / "benchmarks" / OWN_REFERENCE[model]), "--framework", FRAMEWORK[backend]]
    else:
        script = [str(bench_dir / REFERENCE[backend]), "--model", model]
    cmd = [sys.executable, *script, "--mode", "throughput", "--steps", str(steps), "--warmup", str(warmup), "--batch", "128"]
    out, rss = measure(cmd, env={**os.environ, "SPECC_REFERENCE_BENCH": str(bench_dir)})
    record = json.loads(out.strip().splitlines()[-1])
    return {"samples_per_s": record["samples_per_s"], "rss_mib": rss}


def specc(backend: str, model: str, steps: int, warmup: int, extra: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "specc", "train", str(SPECS / f"{model}.spec"), "--backend", backend,
               "--epochs", "1", "--limit", str((steps + warmup) * 128), "--quiet", "--out", f"{tmp}/run", *extra]
        out, rss = measure(cmd)
    result = json.loads(out.strip().splitlines()[-1])
    return {"samples_per_s": result["train_samples_per_second"], "rss_mib": rss}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=["lenet"], choices=["lenet", "mlp", "lstm", "resnet_mnist"])
    ap.add_argument("--backends", nargs="+", default=["jax", "torch"], choices=["jax", "torch"])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--bench-dir", type=Path, default=default_bench_dir())
    ap.add_argument("--specc-arg", action="append", default=[], help="extra `specc train` argument (repeatable)")
    ap.add_argument("--json", type=Path, help="append one JSON line per measurement to this file")
    args = ap.parse_args(argv)
    if not (args.bench_dir / "bench_flax.py").is_file():
        raise SystemExit(f"no reference loops in {args.bench_dir}; pass --bench-dir or set SPECC_REFERENCE_BENCH")

    rows: dict[tuple[str, str], list[tuple[dict, dict]]] = {}
    for r in range(args.rounds):
        for model in args.models:
            for backend in args.backends:
                pair = [lambda: reference(args.bench_dir, backend, model, args.steps, args.warmup),
                        lambda: specc(backend, model, args.steps, args.warmup, args.specc_arg)]
                first, second = (pair if r % 2 == 0 else pair[::-1])
                a, b = first(), second()
                ref, ours = (a, b) if r % 2 == 0 else (b, a)
                rows.setdefault((model, backend), []).append((ref, ours))
                line = {"round": r, "model": model, "backend": backend, "reference": ref, "specc": ours,
                        "ratio": ours["samples_per_s"] / ref["samples_per_s"]}
                print(json.dumps(line), flush=True)
                if args.json:
                    with args.json.open("a") as fh:
                        fh.write(json.dumps(line) + "\n")

    print(f"\n{'model':<13}{'backend':<9}{'reference':>14}{'specc':>14}{'ratio':>8}{'ref RSS':>10}{'specc RSS':>11}")
    for (model, backend), pairs in rows.items():
        ref = statistics.median(p[0]["samples_per_s"] for p in pairs)
        ours = statistics.median(p[1]["samples_per_s"] for p in pairs)
        ratio = statistics.median(p[1]["samples_per_s"] / p[0]["samples_per_s"] for p in pairs)
        rss_ref = statistics.median(p[0]["rss_mib"] for p in pairs)
        rss_ours = statistics.median(p[1]["rss_mib"] for p in pairs)
        print(f"{model:<13}{backend:<9}{ref:>12,.0f}/s{ours:>12,.0f}/s{ratio:>8.2f}{rss_ref:>8.0f}MB{rss_ours:>9.0f}MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
