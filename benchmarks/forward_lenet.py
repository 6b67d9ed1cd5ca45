"""Inference overhead: specc's forward pass of specs/lenet.spec against the
best idiomatic hand-written PyTorch and Flax LeNets, same batch, weights and
machine, in one process, interleaved (specc, hand-written, specc, ...) to share
noise.

    python benchmarks/forward_lenet.py                       # both backends, batch 128
    python benchmarks/forward_lenet.py --backend jax --batch 1024 --repeats 3
    python benchmarks/forward_lenet.py --repeats 2 --seconds 0.5   # a quick check

torch: `specc.build(model, backend="torch")` holding the canonical weights
`specc.init_weights(model, 0)`, in eval mode under `torch.inference_mode()`,
against an `nn.Sequential` of stock layers with the same weights copied in.
Both take the same NCHW float32 tensor.

jax: the jitted inference function that `specc.run(..., backend="jax")` calls
(channels-first input; the NCHW -> NHWC transpose is inside the jitted code, as
part of specc's abstraction), against a hand-written NHWC linen module under
`jax.jit`, given the same canonical weights (dense_1's rows permuted from the
channels-first (C, H, W) flatten order to NHWC's (H, W, C)). Each side gets its
input already on the device in its natural layout; only the jitted calls are
timed, with every output blocked on. specc computes its convs and matmuls at
`Precision.HIGHEST` (identical to the default on CPU); the hand-written module
does too unless `--hand-precision default` (TF32 on recent NVIDIA GPUs, looser
agreement check).

Before timing, both outputs are checked to agree (np.allclose, 1e-5). Each
measurement is warmed up (compiled), then runs enough calls to last about
--seconds. Prints samples/s (median of --repeats) and the ratio
specc / hand-written (target 1.00).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "specs" / "lenet.spec"
WARMUP = 3
TOL = 1e-5


def lenet():
    import specc

    model = specc.load(SPEC)["lenet"]
    return model, specc.init_weights(model, 0)


def batch_of(n: int) -> np.ndarray:
    return np.random.default_rng(0).random((n, 1, 28, 28), dtype=np.float32)  # NCHW, MNIST-like in [0, 1)


def check(name: str, ours: np.ndarray, theirs: np.ndarray, tol: float) -> None:
    if ours.shape != theirs.shape or not np.allclose(ours, theirs, rtol=tol, atol=tol):
        diff = np.max(np.abs(ours - theirs)) if ours.shape == theirs.shape else float("nan")
        raise SystemExit(f"{name}: specc and hand-written outputs differ (shapes {ours.shape} vs {theirs.shape}, "
                         f"max |diff| {diff:.3g}); the comparison would not be fair")


class Timer:
    """Samples/s of `call()` (one batch per call). `sync(results)` waits for
    the list of results. The number of calls per measurement is fixed once,
    after warm-up, so each lasts about `seconds`."""

    def __init__(self, call: Callable[[], object], sync: Callable[[list], None], batch: int, seconds: float):
        self.call, self.sync, self.batch = call, sync, batch
        self.sync([call() for _ in range(WARMUP)])
        start = time.perf_counter()
        self.sync([call()])
        one = time.perf_counter() - start
        self.iters = max(3, int(seconds / max(one, 1e-6)))

    def measure(self) -> float:
        call = self.call
        start = time.perf_counter()
        results = [call() for _ in range(self.iters)]
        self.sync(results)
        return self.iters * self.batch / (time.perf_counter() - start)


# ---------------------------------------------------------------- torch


def torch_pair(model, weights, x: np.ndarray, seconds: float) -> tuple[Timer, Timer]:
    import torch
    from torch import nn

    import specc
    from specc.backend import get

    device = "cuda" if torch.cuda.is_available() else "cpu"

    ours = specc.build(model, backend="torch")
    get("torch").load(ours, model, weights)  # canonical weights -> native (exact)
    ours = ours.to(device).eval()

    theirs = nn.Sequential(
        nn.Conv2d(1, 20, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(20, 50, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(2450, 500), nn.ReLU(), nn.Linear(500, 10), nn.Softmax(dim=1),
    )
    # The same canonical (Keras-layout) weights, converted by hand: conv HWIO -> OIHW, dense [in, out] -> [out, in].
    with torch.no_grad():
        for mod, layer in ((theirs[0], "conv2d_1"), (theirs[3], "conv2d_2")):
            mod.weight.copy_(torch.from_numpy(weights[f"{layer}/kernel"].transpose(3, 2, 0, 1).copy()))
            mod.bias.copy_(torch.from_numpy(weights[f"{layer}/bias"]))
        for mod, layer in ((theirs[7], "dense_1"), (theirs[9], "dense_2")):
            mod.weight.copy_(torch.from_numpy(weights[f"{layer}/kernel"].T.copy()))
            mod.bias.copy_(torch.from_numpy(weights[f"{layer}/bias"]))
    theirs = theirs.to(device).eval()

    xt = torch.from_numpy(x).to(device)

    def sync(results):
        if device == "cuda":
            torch.cuda.synchronize()

    def infer(net):
        def call():
            with torch.inference_mode():
                return net(xt)
        return call

    check("torch", infer(ours)().cpu().numpy(), infer(theirs)().cpu().numpy(), TOL)
    n = len(x)
    return Timer(infer(ours), sync, n, seconds), Timer(infer(theirs), sync, n, seconds)


# ---------------------------------------------------------------- jax


def jax_pair(model, weights, x: np.ndarray, seconds: float, hand_precision: str) -> tuple[Timer, Timer]:
    import flax.linen as nn
    import jax
    import jax.numpy as jnp
    from jax import lax

    from specc.backend import get

    B = get("jax")
    # Exactly what specc.run(model, weights, x, backend="jax") executes: the
    # cached jitted inference function applied to to_native's variables.
    infer = B._compiled(B._key(model))[0]
    variables = B.to_native(model, weights)
    x_cf = jax.device_put(x)  # specc's input: channels-first, as the user holds it

    precision = lax.Precision.HIGHEST if hand_precision == "highest" else None

    class LeNet(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = nn.relu(nn.Conv(20, (5, 5), padding="SAME", precision=precision)(x))
            x = nn.max_pool(x, (2, 2), (2, 2))
            x = nn.relu(nn.Conv(50, (5, 5), padding="SAME", precision=precision)(x))
            x = nn.max_pool(x, (2, 2), (2, 2))
            x = x.reshape(x.shape[0], -1)
            x = nn.relu(nn.Dense(500, precision=precision)(x))
            return nn.softmax(nn.Dense(10, precision=precision)(x))

    net = LeNet()
    x_hwc = jax.device_put(np.ascontiguousarray(x.transpose(0, 2, 3, 1)))  # NHWC, as Flax code would hold it
    # Canonical weights: conv kernels are HWIO in both; dense_1's input rows go
    # from channels-first flatten order (C, H, W) to NHWC's (H, W, C).
    dense_1 = weights["dense_1/kernel"].reshape(50, 7, 7, 500).transpose(1, 2, 0, 3).reshape(2450, 500)
    hand = {"params": {
        "Conv_0": {"kernel": weights["conv2d_1/kernel"], "bias": weights["conv2d_1/bias"]},
        "Conv_1": {"kernel": weights["conv2d_2/kernel"], "bias": weights["conv2d_2/bias"]},
        "Dense_0": {"kernel": dense_1, "bias": weights["dense_1/bias"]},
        "Dense_1": {"kernel": weights["dense_2/kernel"], "bias": weights["dense_2/bias"]},
    }}
    shapes = jax.tree_util.tree_map(jnp.shape, net.init(jax.random.key(0), x_hwc[:1]))
    if shapes != jax.tree_util.tree_map(np.shape, hand):
        raise SystemExit(f"hand-written Flax params do not match the module: {shapes}")
    hand = jax.device_put(hand)
    apply = jax.jit(net.apply)

    tol = TOL if hand_precision == "highest" else 1e-3
    check("jax", np.asarray(infer(variables, x_cf)), np.asarray(apply(hand, x_hwc)), tol)
    n = len(x)
    return (Timer(lambda: infer(variables, x_cf), jax.block_until_ready, n, seconds),
            Timer(lambda: apply(hand, x_hwc), jax.block_until_ready, n, seconds))


# ---------------------------------------------------------------- main


def report(backend: str, ours: list[float], theirs: list[float], args) -> None:
    s, h = statistics.median(ours), statistics.median(theirs)
    print(f"backend {backend}: LeNet forward, batch {args.batch}, median of {args.repeats}")
    print(f"  specc            {s:12,.0f} samples/s   runs: {', '.join(f'{v:,.0f}' for v in ours)}")
    print(f"  hand-written     {h:12,.0f} samples/s   runs: {', '.join(f'{v:,.0f}' for v in theirs)}")
    print(f"  ratio specc / hand-written: {s / h:.3f}  (target 1.00)")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backend", choices=("jax", "torch", "both"), default="both")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--seconds", type=float, default=1.5, help="approximate length of one measurement")
    p.add_argument("--hand-precision", choices=("highest", "default"), default="highest",
                   help="matmul/conv precision of the hand-written Flax module (specc uses highest)")
    args = p.parse_args(argv)

    model, weights = lenet()
    x = batch_of(args.batch)
    backends = ("torch", "jax") if args.backend == "both" else (args.backend,)
    pairs = {}
    for b in backends:
        pairs[b] = (torch_pair(model, weights, x, args.seconds) if b == "torch"
                    else jax_pair(model, weights, x, args.seconds, args.hand_precision))
    results = {b: ([], []) for b in backends}
    for r in range(args.repeats):
        for b in backends:
            (ours_t, theirs_t), (ours, theirs) = pairs[b], results[b]
            if r % 2 == 0:  # alternate who goes first, so drift does not favour one side
                ours.append(ours_t.measure())
                theirs.append(theirs_t.measure())
            else:
                theirs.append(theirs_t.measure())
                ours.append(ours_t.measure())
    for b in backends:
        report(b, *results[b], args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
