"""What specc's PyTorch train step costs against the reference PyTorch loop,
and what the speed options (backends/pytorch/speed.py) buy.

In ONE process, on the same MNIST samples and the same number of threads:

- `reference`: ../shared/bench/bench_torch.py's step (torch_models.lenet/mlp,
  torch.optim.Adam defaults, F.cross_entropy, batches by tensor indexing);
- `specc`: specc's trainer as the runner drives it
  (`specc.backend.get("torch").trainer(model, plan, weights)`: `put`,
  `begin_epoch`, `step(i)`);
- `specc-rebuilt` and ablations: the trainer's step (backends/pytorch/train.py,
  `Trainer.step`) written out from the trainer's own parts, with ONE change:
  `-no-buffers` (no per-step loss/hit writes), `-no-prepare` (no per-step
  `Update.prepare` lr/eps), `-slice` (`x[idx]` instead of index_select),
  `-foreach-adam` (torch's default Adam instead of the fused kernel);
- the speed options on both sides: `+cl` (channels_last net and inputs),
  `+compile` (torch.compile of the network, inductor).

Timed blocks of `--block` steps of each variant, `--rounds` times, the order
rotating each round; prints the median ms/step and the speed against the
reference. torch.compile's first steps (the compilation) are outside the
timed blocks, and its compile time is printed.

    python benchmarks/profile_torch_step.py --models lenet mlp
    python benchmarks/profile_torch_step.py --variants reference specc specc+cl specc+compile

Run it on an idle machine: PyTorch's threads collapse when another process is
busy, and only ratios measured side by side mean anything.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from step_timing import interleaved, report_times  # benchmarks/step_timing.py (run as scripts)

ROOT = Path(__file__).resolve().parents[1]
SPECS = ROOT / "benchmarks" / "specs"
BENCH = Path(os.environ.get("SPECC_REFERENCE_BENCH", ROOT.parent / "shared" / "bench"))
VARIANTS = ("reference", "reference+cl", "reference+compile", "specc", "specc-rebuilt", "specc-no-buffers",
            "specc-no-prepare", "specc-slice", "specc-foreach-adam", "specc+cl", "specc+compile",
            "specc+cl+compile")
DEFAULT_VARIANTS = ("reference", "specc", "specc-rebuilt", "specc-no-buffers", "specc-no-prepare", "specc-slice",
                    "specc-foreach-adam", "specc+cl")


def load(model_name: str, samples: int):
    sys.path.insert(0, str(BENCH))
    from mnist_idx import load_mnist

    xtr, ytr, _, _ = load_mnist()
    return xtr[:samples], ytr[:samples]


def _options(variant: str) -> set[str]:
    return set(variant.split("+")[1:])


def reference_runner(model_name: str, x, y, batch: int, variant: str):
    import torch
    import torch.nn.functional as F
    import torch_models

    from specc.backends.pytorch import speed

    opts = _options(variant)
    torch.manual_seed(0)
    shape = (1, 28, 28) if model_name == "lenet" else (28, 28)
    xtr = torch.from_numpy(x).reshape((-1,) + shape).contiguous()
    ytr = torch.from_numpy(y.astype("int64"))
    model = torch_models.MODELS[model_name]()
    if "cl" in opts:
        speed.channels_last(model)
        xtr = speed.channels_last_data(xtr)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    forward = model
    if "compile" in opts:
        forward, why = speed.maybe_compile(model, xtr[:batch])
        print(f"  {variant}: {why}", flush=True)
    model.train()
    n = xtr.shape[0]

    def batches():
        while True:
            perm = torch.randperm(n)
            for i in range(0, n - batch + 1, batch):
                idx = perm[i:i + batch]
                yield xtr[idx], ytr[idx]

    it = batches()

    def run(k: int) -> None:
        for _ in range(k):
            xb, yb = next(it)
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(forward(xb), yb)
            loss.backward()
            opt.step()
        loss.item()

    return run


def specc_parts(model_name: str, samples: int):
    import specc
    from specc.plan import make_plan

    program = specc.load(SPECS / f"{model_name}.spec")
    model, train = program[model_name], program.trains[model_name]
    return model, make_plan(model, train, samples, "categorical")


def specc_runner(model_name: str, x, y, batch: int, variant: str):
    """The trainer through the backend API; with `-...` ablations, its step
    written out from the trainer's parts (mirrors backends/pytorch/train.py)."""
    import numpy as np
    import torch

    from specc import backend
    from specc.backends.pytorch import speed
    from specc.backends.pytorch.optim import Update
    from specc.plan import learning_rate
    from specc.weights import init_weights

    base, opts = variant.split("+")[0], _options(variant)
    model, plan = specc_parts(model_name, len(x))
    trainer = backend.get("torch").trainer(model, plan, init_weights(model, 0))
    xs = x.reshape((-1, *model.input_shape))
    if base == "specc-foreach-adam":
        a = dict(plan.optimizer.args)
        opt = torch.optim.Adam(trainer.params, lr=a["lr"], betas=(a["beta1"], a["beta2"]), eps=a["epsilon"])
        trainer.update = Update(opt, beta2=a["beta2"], epsilon=a["epsilon"])
        trainer.optimizer = opt
    if "cl" in opts:
        speed.channels_last(trainer.net)
    data = trainer.put(xs, y)
    if "cl" in opts:
        data.x = speed.channels_last_data(data.x)
    forward = trainer.net
    if "compile" in opts:
        forward, why = speed.maybe_compile(trainer.net, data.x[:batch])
        print(f"  {variant}: {why}", flush=True)
    rng = np.random.default_rng(0)
    steps = len(xs) // batch
    pos = {"i": steps, "epoch": -1}
    gather_slice = base == "specc-slice" or "cl" in opts  # index_select drops channels_last

    def step(i: int) -> None:  # Trainer.step, with the ablation's one change
        t = trainer
        idx = t._order[i * batch:(i + 1) * batch]
        if gather_slice:
            xb, yb = t._data.x[idx], t._data.y[idx]
        else:
            xb, yb = t._data.x.index_select(0, idx), t._data.y.index_select(0, idx)
        out = forward(xb)
        loss = t._loss_fn(out, yb)
        t.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if base != "specc-no-prepare" or t.updates == 0:
            t.update.prepare(learning_rate(plan, t._epoch * plan.steps_per_epoch + i), t.updates + 1)
        t.optimizer.step()
        t.updates += 1
        if base != "specc-no-buffers":
            t._losses[i] = loss.detach()
            if t._hits_fn is not None:
                with torch.no_grad():
                    t._hits[i] = t._hits_fn(out, yb)
        t._next = i + 1

    plain = base == "specc" and not opts

    def run(k: int) -> None:
        for _ in range(k):
            if pos["i"] >= steps:
                pos["epoch"] += 1
                trainer.begin_epoch(data, rng.permutation(len(xs))[: steps * batch], pos["epoch"])
                pos["i"] = 0
            (trainer.step if plain else step)(pos["i"])
            pos["i"] += 1
        trainer.pull()

    return run


def make_runner(variant: str, model_name: str, x, y, batch: int):
    if variant.startswith("reference"):
        return reference_runner(model_name, x, y, batch, variant)
    return specc_runner(model_name, x, y, batch, variant)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=["lenet"], choices=["lenet", "mlp"])
    ap.add_argument("--variants", nargs="+", default=list(DEFAULT_VARIANTS), choices=VARIANTS)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--block", type=int, default=20)
    ap.add_argument("--samples", type=int, default=12800)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (the reference loop's default)")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    import torch

    torch.set_num_threads(args.threads)
    for model_name in args.models:
        x, y = load(model_name, args.samples)
        print(f"== {model_name}: torch {torch.__version__}, {torch.get_num_threads()} threads", flush=True)
        runners = {v: make_runner(v, model_name, x, y, args.batch) for v in args.variants}
        report_times(*interleaved(runners, args.rounds, args.block), args.batch, width=22, digits=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
