"""Where specc's jitted JAX train step loses time against the reference Flax loop.

In ONE process this builds, on the same MNIST samples:

- `reference`: the shared reference loop's step (../shared/bench/bench_flax.py:
  flax_models.LeNet / MLP, optax.adam, optax's integer-label cross-entropy,
  an eager gather of each shuffled batch from on-device arrays);
- `specc`: specc's trainer exactly as the runner drives it
  (`specc.backend.get("jax").trainer(model, plan, weights)`: `put`,
  `begin_epoch`, `step(i)`);
- `specc-rebuilt`: the same step rebuilt from specc's own pieces
  (`apply_fn`, `per_sample_loss`, `correct_count`, `make_optimizer`), and
  ablations of it, each changing ONE thing: `-lax-pool` (MaxPool lowered to
  lax.reduce_window as before the tiled formulation), `-default-precision`
  (precision=None instead of HIGHEST), `-optax-adam` (instead of the
  Keras-formula Adam), `-no-metrics`, `-no-donate`, `-keep-params` (all
  but the parameters donated), `-barrier` (an optimization_barrier between
  the gradients and the update), `-gather-outside` (the batch gathered
  eagerly, as the reference does);
- `<variant>@xlaconv`: compiled with specc's XLA:CPU setting as a per-function
  compiler option (XLA's convolutions instead of YNNPACK's). In one process
  this understates the setting (the other variants' YNNPACK threads stay
  busy beside it): measure flags with `--compare-flags`.

and times interleaved blocks of `--block` steps of each, `--rounds` times (the
order rotates every round), printing the median ms/step and the speed ratio
against the reference. `--hlo` prints what XLA made of each step (top-level
ops of the optimised HLO: copies, transposes, YNNPACK fusions, dots,
gathers; XLA's cost analysis), `--trace` profiles a few steps of each with
`jax.profiler` and prints where the time goes, op by op.

XLA flags only act when set before jax starts, so `--xla-defaults on|off`
chooses whether specc's CPU defaults (backends/jax_flax/xla_flags.py) are
applied in this process, and `--compare-flags` runs child processes that
alternate between the two (reference and specc in each), per model kind.

    python benchmarks/profile_jax_step.py                       # lenet, all variants
    python benchmarks/profile_jax_step.py --variants reference specc --hlo --trace
    python benchmarks/profile_jax_step.py --compare-flags --models lenet mlp lstm

The machine this was written on is shared: only ratios measured side by side
mean anything, and they are provisional.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
from collections import Counter, defaultdict
from pathlib import Path

from step_timing import interleaved, report_times  # benchmarks/step_timing.py (run as scripts)

ROOT = Path(__file__).resolve().parents[1]
SPECS = ROOT / "benchmarks" / "specs"
BENCH = Path(os.environ.get("SPECC_REFERENCE_BENCH", ROOT.parent / "shared" / "bench"))
BASES = ("reference", "specc", "specc-rebuilt", "specc-lax-pool", "specc-default-precision", "specc-optax-adam",
         "specc-no-metrics", "specc-no-donate", "specc-keep-params", "specc-barrier", "specc-gather-outside")
# "<base>@xlaconv": the same step compiled with specc's XLA:CPU setting as a
# per-function compiler option (XLA's own convolutions instead of YNNPACK's).
VARIANTS = BASES + tuple(f"{b}@xlaconv" for b in BASES if b != "specc")
DEFAULT_VARIANTS = ("reference", "reference@xlaconv", "specc", "specc-rebuilt", "specc-rebuilt@xlaconv",
                    "specc-lax-pool@xlaconv", "specc-default-precision", "specc-optax-adam", "specc-no-metrics", "specc-no-donate",
                    "specc-gather-outside")


def conv_options(variant: str) -> dict:
    if not variant.endswith("@xlaconv"):
        return {}
    from specc.backends.jax_flax.xla_flags import SETTINGS

    return {s.flag: s.option_value for s in SETTINGS}


def _setup_flags(mode: str) -> None:
    """Before jax is imported: apply (or not) specc's XLA defaults."""
    sys.path.insert(0, str(ROOT))
    if mode == "off":
        os.environ["SPECC_XLA_DEFAULTS"] = "0"
    from specc.backend import prepare_jax

    prepare_jax()


# ---------------------------------------------------------------- the steps


def load(model_name: str, samples: int):
    sys.path.insert(0, str(BENCH))
    import numpy as np
    from mnist_idx import load_mnist

    xtr, ytr, _, _ = load_mnist()
    return xtr[:samples].astype(np.float32), ytr[:samples].astype(np.int32)


def reference_runner(model_name: str, x, y, batch: int, seed: int = 0, options: dict | None = None):
    """bench_flax.py's step and batch stream, verbatim in substance."""
    import flax_models
    import jax
    import jax.numpy as jnp
    import optax
    from flax.training import train_state

    shape = flax_models.INPUT_SHAPES[model_name]
    xtr = jnp.asarray(x.reshape((-1,) + shape))
    ytr = jnp.asarray(y)
    module = flax_models.MODELS[model_name]()
    key, init_key = jax.random.split(jax.random.PRNGKey(seed))
    params = module.init(init_key, jnp.zeros((1,) + shape, jnp.float32))["params"]
    state = train_state.TrainState.create(apply_fn=module.apply, params=params, tx=optax.adam(1e-3))

    def train_step(state, xb, yb):
        def loss_fn(p):
            logits = state.apply_fn({"params": p}, xb)
            return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()

        loss, grads = jax.value_and_grad(loss_fn)(state.params)
        return state.apply_gradients(grads=grads), loss

    train_step = jax.jit(train_step, compiler_options=options or None)

    n = xtr.shape[0]

    def batches(key):
        while True:
            key, sub = jax.random.split(key)
            perm = jax.random.permutation(sub, n)
            for i in range(0, n - batch + 1, batch):
                idx = perm[i:i + batch]
                yield xtr[idx], ytr[idx]

    it = batches(key)
    box = {"state": state, "loss": None}

    def run(k: int) -> None:
        st = box["state"]
        for _ in range(k):
            xb, yb = next(it)
            st, loss = train_step(st, xb, yb)
        jax.block_until_ready((st, loss))
        box["state"] = st

    run.lower = lambda: train_step.lower(box["state"], xtr[:batch], ytr[:batch])
    return run


def specc_parts(model_name: str, samples: int):
    import specc
    from specc.plan import make_plan

    program = specc.load(SPECS / f"{model_name}.spec")
    model, train = program[model_name], program.trains[model_name]
    plan = make_plan(model, train, samples, "categorical")
    return model, plan


def specc_runner(model_name: str, x, y, batch: int, seed: int = 0):
    """specc's trainer, driven as the runner drives it."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    from specc import backend
    from specc.weights import init_weights

    model, plan = specc_parts(model_name, len(x))
    trainer = backend.get("jax").trainer(model, plan, init_weights(model, seed))
    data = trainer.put(x.reshape((-1, *model.input_shape)), y)
    rng = np.random.default_rng(seed)
    steps = len(x) // batch
    pos = {"i": steps, "epoch": -1}

    def run(k: int) -> None:
        for _ in range(k):
            if pos["i"] >= steps:
                pos["epoch"] += 1
                trainer.begin_epoch(data, rng.permutation(len(x))[: steps * batch], pos["epoch"])
                pos["i"] = 0
            trainer.step(pos["i"])
            pos["i"] += 1
        jax.block_until_ready(trainer.carry)

    def lower():
        fn = trainer._train_steps[batch]
        return fn.lower(trainer.carry, *trainer._data, trainer._order, jnp.int32(0), batch)

    run.lower = lower
    return run


def ablation_runner(model_name: str, x, y, batch: int, variant: str, seed: int = 0):
    """specc's train step (backends/jax_flax/train.py, Trainer._train) rebuilt
    from its own pieces, with the one change `variant` names."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax
    from jax import lax

    from specc.backends.jax_flax import apply_fn, to_native
    from specc.backends.jax_flax.train import _zero_metrics, correct_count, make_optimizer, per_sample_loss
    from specc.weights import init_weights

    model, plan = specc_parts(model_name, len(x))
    options = conv_options(variant)
    variant = variant.split("@")[0]
    precision = None if variant == "specc-default-precision" else lax.Precision.HIGHEST
    apply = apply_fn(model, logits=plan.logits, precision=precision)
    if variant == "specc-lax-pool":
        apply = _with_lax_pool(apply)
    optimizer = optax.adam(plan.lr) if variant == "specc-optax-adam" else make_optimizer(plan)
    metrics_on = variant != "specc-no-metrics"
    barrier = variant == "specc-barrier"
    outside = variant == "specc-gather-outside"
    variables = to_native(model, init_weights(model, seed))
    carry = {"params": variables["params"], "batch_stats": variables.get("batch_stats", {}),
             "opt": optimizer.init(variables["params"]), "metrics": _zero_metrics(), "step": jnp.zeros([], jnp.int32)}
    key = jax.random.key(seed)

    def update(carry, xb, yb):
        rng = jax.random.fold_in(key, carry["step"])

        def loss_fn(params):
            out, stats = apply({"params": params, "batch_stats": carry["batch_stats"]}, xb, True, rng)
            return jnp.mean(per_sample_loss(plan, out, yb)), (out, stats)

        (loss, (out, stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(carry["params"])
        params = carry["params"]
        if barrier:  # every reader of the old parameters before any update writes them
            grads, params = lax.optimization_barrier((grads, params))
        updates, opt = optimizer.update(grads, carry["opt"], params)
        params = optax.apply_updates(params, updates)
        m = carry["metrics"]
        if metrics_on:
            finite = jnp.isfinite(loss)
            first_bad = (m["bad"] < 0) & ~finite
            m = {"loss": m["loss"] + loss * batch, "correct": m["correct"] + correct_count(plan, out, yb),
                 "samples": m["samples"] + batch, "bad": jnp.where(first_bad, carry["step"], m["bad"]),
                 "bad_loss": jnp.where(first_bad, loss, m["bad_loss"])}
        return {"params": params, "batch_stats": stats or carry["batch_stats"], "opt": opt, "metrics": m,
                "step": carry["step"] + 1}

    def gathered(carry, x_all, y_all, order, start):
        idx = lax.dynamic_slice_in_dim(order, start, batch)
        return update(carry, jnp.take(x_all, idx, axis=0), jnp.take(y_all, idx, axis=0))

    donate = () if variant == "specc-no-donate" else (0,)
    step_fn = jax.jit(update if outside else gathered, donate_argnums=donate, compiler_options=options or None)
    if variant == "specc-keep-params":
        step_fn = _params_not_donated(gathered, options)
    x_all = jnp.asarray(x.reshape((-1, *model.input_shape)))
    y_all = jnp.asarray(y)
    rng = np.random.default_rng(seed)
    steps = len(x) // batch
    box = {"carry": carry, "i": steps, "order": None}

    def run(k: int) -> None:
        c = box["carry"]
        for _ in range(k):
            if box["i"] >= steps:
                box["order"] = jnp.asarray(rng.permutation(len(x)).astype(np.int32))
                box["i"] = 0
            if outside:
                idx = box["order"][box["i"] * batch:(box["i"] + 1) * batch]
                c = step_fn(c, x_all[idx], y_all[idx])
            else:
                c = step_fn(c, x_all, y_all, box["order"], jnp.int32(box["i"] * batch))
            box["i"] += 1
        jax.block_until_ready(c)
        box["carry"] = c

    def lower():
        if outside:
            return step_fn.lower(box["carry"], x_all[:batch], y_all[:batch])
        return step_fn.lower(box["carry"], x_all, y_all, box["order"], jnp.int32(0))

    run.lower = lower
    return run


class _params_not_donated:
    """The step with the carry split in two: the parameters (not donated, so
    their updated values go to fresh buffers) and the rest (donated)."""

    def __init__(self, step, options):
        import jax

        def split(params, rest, *args):
            out = step({"params": params, **rest}, *args)
            return out["params"], {k: v for k, v in out.items() if k != "params"}

        self.fn = jax.jit(split, donate_argnums=(1,), compiler_options=options or None)

    @staticmethod
    def _parts(carry):
        return carry["params"], {k: v for k, v in carry.items() if k != "params"}

    def __call__(self, carry, *args):
        params, rest = self.fn(*self._parts(carry), *args)
        return {"params": params, **rest}

    def lower(self, carry, *args):
        return self.fn.lower(*self._parts(carry), *args)


def _with_lax_pool(apply):
    """`apply` traced with MaxPool lowered as before the tiled formulation
    (lax.reduce_window, whose gradient is select_and_scatter)."""
    import jax.numpy as jnp
    from jax import lax

    from specc.backends.jax_flax import layers

    def lax_pool(layer, x, ctx):
        x = ctx.nhwc(x)
        window, strides, pads = layers._pool_args(layer)
        return lax.reduce_window(x, -jnp.inf, lax.max, window, strides, pads)

    def patched(*args, **kwargs):
        saved = layers.LOWER["MaxPool"]
        layers.LOWER["MaxPool"] = lax_pool
        try:
            return apply(*args, **kwargs)
        finally:
            layers.LOWER["MaxPool"] = saved

    return patched


def make_runner(variant: str, model_name: str, x, y, batch: int):
    if variant.split("@")[0] == "reference":
        return reference_runner(model_name, x, y, batch, options=conv_options(variant))
    if variant == "specc":
        return specc_runner(model_name, x, y, batch)
    return ablation_runner(model_name, x, y, batch, variant)


# ---------------------------------------------------------------- what XLA made


ENTRY_OP = re.compile(r"^\s*(?:ROOT )?%(\S+) = (\S+?)(?:\{[^}]*\})? (\S+?)\((.*)$")


def hlo_summary(compiled) -> dict:
    """Top-level (ENTRY) instructions of the optimised HLO by what they are."""
    text = compiled.as_text()
    entry = text[text.index("\nENTRY"):]
    entry = entry[: entry.index("\n}")]
    kinds: Counter = Counter()
    big_copies = []
    for line in entry.splitlines()[1:]:
        m = ENTRY_OP.match(line)
        if not m:
            continue
        name, shape, op = m.group(1), m.group(2), m.group(3)
        if op in ("parameter", "constant", "get-tuple-element", "tuple", "bitcast"):
            continue
        if op == "fusion":
            kind = "ynn_fusion" if "__ynn_fusion" in line else name.split(".")[0].replace("wrapped_", "")
            if "transpose" in kind or "copy" in kind:
                kinds["fusion: transpose/copy"] += 1
                big_copies.append(f"{name} {shape}")
            elif "gather" in kind:
                kinds["fusion: gather"] += 1
            elif "scatter" in kind:
                kinds["fusion: scatter"] += 1
            elif kind == "ynn_fusion":
                kinds["fusion: YNNPACK"] += 1
            elif "reduce" in kind:
                kinds["fusion: reduce"] += 1
            else:
                kinds["fusion: elementwise"] += 1
        else:
            kinds[op] += 1
            if op in ("copy", "transpose"):
                big_copies.append(f"{name} {shape}")
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    highest = len(re.findall(r"operand_precision=\{highest", text))
    return {"ops": dict(kinds), "copies_and_transposes": big_copies,
            "flops": cost.get("flops"), "bytes_accessed": cost.get("bytes accessed"),
            "precision_highest_ops": highest, "ynn_fusions_total": text.count("__ynn_fusion")}


def trace_profile(run, compiled, steps: int, top: int) -> list[tuple[str, float, str]]:
    """ms per step spent in each HLO op of `compiled` over `steps` steps."""
    import jax

    text = compiled.as_text()
    meta = {}
    for line in text.splitlines():
        m = ENTRY_OP.match(line)
        if m:
            op = re.search(r'op_name="([^"]+)"', line)
            meta[m.group(1)] = op.group(1).split("/", 1)[-1][:70] if op else m.group(2)
    with tempfile.TemporaryDirectory() as tmp:
        jax.profiler.start_trace(tmp)
        run(steps)
        jax.profiler.stop_trace()
        path = next(Path(tmp).rglob("*.trace.json.gz"))
        events = [e for e in json.load(gzip.open(path))["traceEvents"] if e.get("ph") == "X"]
    total: dict[str, float] = defaultdict(float)
    for e in events:
        if e["name"] in meta:
            total[e["name"]] += e["dur"] / 1000 / steps
    rows = sorted(total.items(), key=lambda kv: -kv[1])
    return [(name, ms, meta[name]) for name, ms in rows[:top]] + [("(all ops)", sum(total.values()), "")]


# ---------------------------------------------------------------- flags, per model, in child processes


def compare_flags(args) -> int:
    """Alternate child processes with specc's XLA defaults on and off; each
    child times `reference` and `specc` interleaved. Prints, per model, the
    speed of each with the defaults on over off (median of the rounds)."""
    results: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for r in range(args.rounds):
        for model in args.models:
            for mode in (("on", "off") if r % 2 == 0 else ("off", "on")):
                cmd = [sys.executable, __file__, "--models", model, "--variants", "reference", "specc",
                       "--rounds", str(args.child_rounds), "--block", str(args.block), "--samples",
                       str(args.samples), "--xla-defaults", mode, "--json-out", "-"]
                env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
                out = subprocess.run(cmd, capture_output=True, text=True, env=env)
                if out.returncode:
                    print(out.stderr[-3000:], file=sys.stderr)
                    return 1
                rec = json.loads(out.stdout.strip().splitlines()[-1])
                results[(model, mode)].append(rec)
                print(json.dumps({"round": r, "model": model, "xla_defaults": mode, "flags": rec["xla_flags"],
                                  **{k: round(v["ms_per_step"], 2) for k, v in rec["times"].items()}}), flush=True)
    print(f"\n{'model':<8}{'variant':<12}{'ms/step off':>12}{'ms/step on':>12}{'on/off speed':>14}")
    for model in args.models:
        for variant in ("reference", "specc"):
            off = [rec["times"][variant]["ms_per_step"] for rec in results[(model, "off")]]
            on = [rec["times"][variant]["ms_per_step"] for rec in results[(model, "on")]]
            speed = statistics.median(a / b for a, b in zip(off, on))
            print(f"{model:<8}{variant:<12}{statistics.median(off):>12.2f}{statistics.median(on):>12.2f}"
                  f"{speed:>14.3f}")
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=["lenet"], choices=["lenet", "mlp", "lstm"])
    ap.add_argument("--variants", nargs="+", default=list(DEFAULT_VARIANTS), choices=VARIANTS)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--block", type=int, default=30, help="steps per timed block")
    ap.add_argument("--samples", type=int, default=12800)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--hlo", action="store_true", help="summarise each step's optimised HLO")
    ap.add_argument("--trace", action="store_true", help="jax.profiler: ms per step in each HLO op")
    ap.add_argument("--top", type=int, default=15)
    ap.add_argument("--xla-defaults", choices=["on", "off"], default="off",
                    help="specc's XLA_FLAGS defaults in this process (default off: compare with @xlaconv)")
    ap.add_argument("--compare-flags", action="store_true", help="child processes, XLA defaults on vs off")
    ap.add_argument("--child-rounds", type=int, default=3)
    ap.add_argument("--json-out", help="write the results as one JSON line to this file ('-': stdout)")
    args = ap.parse_args(argv)
    if args.compare_flags:
        return compare_flags(args)

    _setup_flags(args.xla_defaults)
    import jax

    record = {"xla_flags": os.environ.get("XLA_FLAGS", ""), "jax": jax.__version__, "models": {}}
    quiet = args.json_out == "-"
    for model_name in args.models:
        x, y = load(model_name, args.samples)
        runners = {v: make_runner(v, model_name, x, y, args.batch) for v in args.variants}
        if not quiet:
            print(f"== {model_name}: XLA_FLAGS={record['xla_flags']!r}", flush=True)
        times, cpu = interleaved(runners, args.rounds, args.block)
        if quiet:
            record["times"] = {n: {"ms_per_step": statistics.median(t), "cpu_ms_per_step": statistics.median(cpu[n])}
                               for n, t in times.items()}
            continue
        record["models"][model_name] = report_times(times, cpu, args.batch)
        for name, run in runners.items():
            if not (args.hlo or args.trace):
                break
            compiled = run.lower().compile()
            if args.hlo:
                s = hlo_summary(compiled)
                print(f"\n-- {name}: optimised HLO, top-level ops {s['ops']}")
                print(f"   flops {s['flops']:.3e}, bytes accessed {s['bytes_accessed']:.3e}, "
                      f"ops with precision=HIGHEST {s['precision_highest_ops']}, "
                      f"YNNPACK fusions {s['ynn_fusions_total']}")
                print("   copies/transposes: " + "; ".join(s["copies_and_transposes"]))
            if args.trace:
                print(f"\n-- {name}: ms per step by HLO op (jax.profiler, 10 steps)")
                for op, ms, what in trace_profile(run, compiled, 10, args.top):
                    print(f"   {ms:8.2f}  {op:<32} {what}")
    if args.json_out:
        line = json.dumps(record)
        if args.json_out == "-":
            print(line)
        else:
            with open(args.json_out, "a") as fh:
                fh.write(line + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
