"""Front-end speed: `specc summary` as a user runs it, in a fresh process.

    python benchmarks/frontend_speed.py            # median of 3 runs of each
    python benchmarks/frontend_speed.py --repeats 5

Two cases, each timed as the wall time of `python -m specc summary FILE`
(interpreter start, imports, parse, check, shape inference, report):

- specs/resnet50.spec (176 nodes through blocks, residuals and repeats);
- a generated spec of a dozen lines that unrolls to 3,000 nodes through
  nested blocks and repeats (30 stages of 25 residual units of 4 nodes).

Each run also checks that no framework (jax, flax, torch, ...) was imported:
the summary runs under `-X importtime`, and every module it lists is read.
Targets (issue 10): under 1 s each.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FRAMEWORKS = {"jax", "jaxlib", "flax", "optax", "torch", "tensorflow", "keras"}

BIG = """\
block unit(width) {
    residual { Dense(width, activation=relu); Dense(width) }
    ReLU()
}
block stage(width) {
    repeat 25 { unit(width) }
}
model big {
    input [16]
    repeat 30 { stage(16) }
}
"""


def summary_seconds(spec: Path) -> tuple[float, str]:
    """Wall time of one `specc summary` process, and its total-params line."""
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-X", "importtime", "-m", "specc", "summary", str(spec)], cwd=REPO,
                            capture_output=True, text=True, timeout=120)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"specc summary {spec} failed:\n{result.stderr}")
    imported = {line.rsplit("|", 1)[-1].strip().split(".")[0]
                for line in result.stderr.splitlines() if line.startswith("import time:")}
    if imported & FRAMEWORKS:
        raise SystemExit(f"specc summary {spec} imported {sorted(imported & FRAMEWORKS)}")
    total = next(line for line in result.stdout.splitlines() if line.startswith("Total params"))
    return elapsed, total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        big = Path(tmp) / "big.spec"
        big.write_text(BIG)
        for label, spec in (("specs/resnet50.spec", REPO / "specs" / "resnet50.spec"),
                            ("3,000 nodes via blocks and repeats", big)):
            runs = [summary_seconds(spec) for _ in range(args.repeats)]
            times = [t for t, _ in runs]
            print(f"{label}: median {statistics.median(times):.3f} s "
                  f"(min {min(times):.3f}, max {max(times):.3f}; {runs[0][1]}; no framework imported)")


if __name__ == "__main__":
    main()
