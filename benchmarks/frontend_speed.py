"""Front-end speed: `specc summary` as a user runs it, in a fresh process, and
the front end in process on a very long spec.

    python benchmarks/frontend_speed.py            # median of 3 runs of each
    python benchmarks/frontend_speed.py --repeats 5

Cases timed as the wall time of `python -m specc summary FILE` (interpreter
start, imports, parse, check, shape inference, report):

- specs/lenet.spec (the everyday case);
- specs/resnet50.spec (176 nodes through blocks, residuals and repeats);
- a generated spec of a dozen lines that unrolls to 3,000 nodes through
  nested blocks and repeats (30 stages of 25 residual units of 4 nodes);
- a generated spec of 3,000 layers written out one per line (`flat_spec()`;
  tests/test_golden_frontend.py checks that this very text checks and
  summarises correctly).

Each run also checks that no framework (jax, flax, torch, ...) was imported:
the summary runs under `-X importtime`, and every module it lists is read.
The flat spec is also timed in process (`specc.loads` + `specc.summary` + the
table, no interpreter start). Targets (issue 10): under 1 s each for the
summaries of resnet50 and the 3,000-node graph; the unit tests used to require
under 3 s for the lenet summary and the flat spec in process, on a shared
2-core machine (wall-clock limits live here, not in tests/).
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


def flat_spec(layers: int = 3000) -> str:
    """`layers` layers written out, one per line: Dense, BatchNorm, Dropout,
    LeakyReLU and a named Dense in turn, on 64 features (model `deep`)."""
    lines = [("Dense(64, activation=relu)", "BatchNorm()", "Dropout(0.1)", "LeakyReLU(0.2)",
              f"block_{i}: Dense(64)")[i % 5] for i in range(layers)]
    return "let width = 64\nmodel deep {\n    input [width]\n" + "".join(f"    {x}\n" for x in lines) + "}\n"


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


def in_process_seconds(text: str) -> tuple[float, str]:
    """Wall time of parse + check + report + table in this process (specc already imported)."""
    import specc

    start = time.perf_counter()
    program = specc.loads(text, filename="deep.spec")
    table = "\n".join(str(specc.summary(model)) for model in program)
    elapsed = time.perf_counter() - start
    total = next(line for line in table.splitlines() if line.startswith("Total params"))
    return elapsed, total


def report(label: str, runs: list[tuple[float, str]], note: str) -> None:
    times = [t for t, _ in runs]
    print(f"{label}: median {statistics.median(times):.3f} s "
          f"(min {min(times):.3f}, max {max(times):.3f}; {runs[0][1]}; {note})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))  # `import specc` from this checkout when not installed
    with tempfile.TemporaryDirectory() as tmp:
        big, flat = Path(tmp) / "big.spec", Path(tmp) / "deep.spec"
        big.write_text(BIG)
        flat.write_text(flat_spec())
        for label, spec in (("specs/lenet.spec", REPO / "specs" / "lenet.spec"),
                            ("specs/resnet50.spec", REPO / "specs" / "resnet50.spec"),
                            ("3,000 nodes via blocks and repeats", big),
                            ("3,000 layers written out", flat)):
            report(f"specc summary {label}", [summary_seconds(spec) for _ in range(args.repeats)],
                   "fresh process, no framework imported")
        in_process_seconds(flat_spec(10))  # import specc and warm up outside the timing
        report("3,000 layers written out", [in_process_seconds(flat_spec()) for _ in range(args.repeats)],
               "in process: loads + summary + table")


if __name__ == "__main__":
    main()
