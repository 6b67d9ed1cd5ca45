"""Timing shared by the step profilers (profile_jax_step.py,
profile_torch_step.py): runners interleaved in rotating order, wall and
process CPU time per step, and the table against the "reference" runner."""

from __future__ import annotations

import statistics
import time


def interleaved(runners: dict, rounds: int, block: int) -> tuple[dict, dict]:
    """Wall and CPU ms/step of each runner (this process's CPU time: on a
    busy machine it tracks the work done better than the wall clock), one
    block per runner per round, the order rotating. `runner(n)` runs n steps
    and waits for them; each first runs 3 steps (compilation)."""
    names = list(runners)
    for name, run in runners.items():
        t0 = time.perf_counter()
        run(3)
        print(f"  {name}: first 3 steps {time.perf_counter() - t0:.1f} s", flush=True)
    wall: dict[str, list[float]] = {n: [] for n in names}
    cpu: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            t0, c0 = time.perf_counter(), time.process_time()
            runners[name](block)
            wall[name].append(1000 * (time.perf_counter() - t0) / block)
            cpu[name].append(1000 * (time.process_time() - c0) / block)
    return wall, cpu


def report_times(times: dict[str, list[float]], cpu: dict[str, list[float]], batch: int, width: int = 26,
                 digits: int = 1) -> dict:
    """Print and return the median wall ms/step, samples/s, speed vs the
    "reference" runner (median of the per-round ratios), and the same for
    CPU time."""
    ref, ref_cpu = times.get("reference"), cpu.get("reference")
    out = {}
    print(f"\n{'variant':<{width}}{'ms/step':>9}{'samples/s':>11}{'vs ref':>8}{'CPU ms':>9}{'vs ref':>8}"
          "   per round (wall ms/step)")
    for name, ts in times.items():
        med, med_cpu = statistics.median(ts), statistics.median(cpu[name])
        ratio = statistics.median(r / t for r, t in zip(ref, ts)) if ref else float("nan")
        ratio_cpu = statistics.median(r / t for r, t in zip(ref_cpu, cpu[name])) if ref_cpu else float("nan")
        out[name] = {"ms_per_step": med, "samples_per_s": 1000 * batch / med, "speed_vs_reference": ratio,
                     "cpu_ms_per_step": med_cpu, "cpu_speed_vs_reference": ratio_cpu}
        print(f"{name:<{width}}{med:>9.{digits}f}{1000 * batch / med:>11,.0f}{ratio:>8.3f}{med_cpu:>9.{digits}f}"
              f"{ratio_cpu:>8.3f}   " + " ".join(f"{t:.{digits - 1}f}" for t in ts))
    return out
