"""Reference loops for a network with BatchNorm: specs/resnet_mnist.spec's
small ResNet hand-written in Flax linen + optax and in PyTorch, in the style of
the shared reference loops (../shared/bench/bench_flax.py, bench_torch.py),
whose argument parser, data loader and JSON record this script reuses. The
shared loops have no BatchNorm network, so this one stands beside them.

Idiomatic, as a user would write it: Flax NHWC with `nn.BatchNorm` and a
mutable `batch_stats` collection, `jax.jit` over the whole step, on-device
gather of shuffled batches; PyTorch `nn.Module` with `nn.BatchNorm2d`, NCHW,
tensor slicing, `model.train()`. Both use Keras's BatchNorm settings (momentum
0.99, epsilon 1e-3) as the spec does, Adam 1e-3 and batch 128.

usage: python benchmarks/resnet_reference.py --framework flax  --steps 150 --warmup 10
       python benchmarks/resnet_reference.py --framework torch --steps 150 --warmup 10 [--threads 2]
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

BENCH = Path(os.environ.get("SPECC_REFERENCE_BENCH", Path(__file__).resolve().parents[2] / "shared" / "bench"))
sys.path.insert(0, str(BENCH))
from common import base_parser, contention, emit, rate, snap  # noqa: E402
from mnist_idx import load_mnist  # noqa: E402


# ---------------------------------------------------------------- PyTorch


def torch_resnet():
    import torch.nn as nn
    import torch.nn.functional as F

    def conv_bn(cin, cout, stride=1, kernel=3):
        return nn.Sequential(nn.Conv2d(cin, cout, kernel, stride, padding=kernel // 2, bias=False),
                             nn.BatchNorm2d(cout, eps=1e-3, momentum=0.01))

    class Basic(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.a, self.b = conv_bn(c, c), conv_bn(c, c)

        def forward(self, x):
            return F.relu(x + self.b(F.relu(self.a(x))))

    class Down(nn.Module):
        def __init__(self, cin, cout):
            super().__init__()
            self.a, self.b = conv_bn(cin, cout, 2), conv_bn(cout, cout)
            self.shortcut = conv_bn(cin, cout, 2, kernel=1)

        def forward(self, x):
            return F.relu(self.shortcut(x) + self.b(F.relu(self.a(x))))

    return nn.Sequential(conv_bn(1, 16), nn.ReLU(), nn.MaxPool2d(2), Basic(16), Down(16, 32), Down(32, 64),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10))


def run_torch(args, rec):
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    xtr, ytr, _, _ = load_mnist()
    xtr = torch.from_numpy(xtr).reshape(-1, 1, 28, 28).contiguous()
    ytr = torch.from_numpy(ytr)
    model = torch_resnet()
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    n, bs = xtr.shape[0], args.batch
    model.train()

    def train_step(xb, yb):
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(xb), yb)
        loss.backward()
        opt.step()
        return loss

    def batches():
        while True:
            perm = torch.randperm(n)
            for i in range(0, n - bs + 1, bs):
                idx = perm[i:i + bs]
                yield xtr[idx], ytr[idx]

    rec.update(framework="torch", contender="torch-handwritten", threads=torch.get_num_threads(),
               torch=torch.__version__, n_params=int(sum(p.numel() for p in model.parameters())))
    timed(args, rec, batches(), train_step, lambda loss: float(loss.item()))


# ---------------------------------------------------------------- Flax


def flax_resnet():
    import flax.linen as nn

    class ConvBN(nn.Module):
        filters: int
        stride: int = 1
        kernel: int = 3

        @nn.compact
        def __call__(self, x, train):
            x = nn.Conv(self.filters, (self.kernel,) * 2, (self.stride,) * 2, padding="SAME", use_bias=False)(x)
            return nn.BatchNorm(use_running_average=not train, momentum=0.99, epsilon=1e-3)(x)

    class Basic(nn.Module):
        filters: int

        @nn.compact
        def __call__(self, x, train):
            y = ConvBN(self.filters)(nn.relu(ConvBN(self.filters)(x, train)), train)
            return nn.relu(x + y)

    class Down(nn.Module):
        filters: int

        @nn.compact
        def __call__(self, x, train):
            y = ConvBN(self.filters)(nn.relu(ConvBN(self.filters, 2)(x, train)), train)
            return nn.relu(ConvBN(self.filters, 2, kernel=1)(x, train) + y)

    class ResNet(nn.Module):
        @nn.compact
        def __call__(self, x, train: bool = True):  # (B, 28, 28, 1) NHWC
            x = nn.relu(ConvBN(16)(x, train))
            x = nn.max_pool(x, (2, 2), strides=(2, 2))
            x = Down(64)(Down(32)(Basic(16)(x, train), train), train)
            return nn.Dense(10)(x.mean(axis=(1, 2)))

    return ResNet()


def run_flax(args, rec):
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    xtr, ytr, _, _ = load_mnist()
    xtr = jnp.asarray(xtr.reshape(-1, 28, 28, 1))
    ytr = jnp.asarray(ytr.astype(np.int32))
    model = flax_resnet()
    key = jax.random.PRNGKey(args.seed)
    variables = model.init(key, jnp.zeros((1, 28, 28, 1), jnp.float32), train=False)
    params, stats = variables["params"], variables["batch_stats"]
    tx = optax.adam(args.lr)
    opt_state = tx.init(params)

    @jax.jit
    def train_step(state, xb, yb):
        params, stats, opt_state = state

        def loss_fn(p):
            logits, updates = model.apply({"params": p, "batch_stats": stats}, xb, train=True,
                                          mutable=["batch_stats"])
            return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean(), updates["batch_stats"]

        (loss, stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), stats, opt_state), loss

    n, bs = xtr.shape[0], args.batch

    def batches(key):
        while True:
            key, sub = jax.random.split(key)
            perm = jax.random.permutation(sub, n)
            for i in range(0, n - bs + 1, bs):
                idx = perm[i:i + bs]
                yield xtr[idx], ytr[idx]

    state = (params, stats, opt_state)

    def step(xb, yb):
        nonlocal state
        state, loss = train_step(state, xb, yb)
        return loss

    rec.update(framework="flax", contender="flax-handwritten", jax=jax.__version__,
               n_params=int(sum(x.size for x in jax.tree_util.tree_leaves(params))))
    timed(args, rec, batches(key), step, lambda loss: float(jax.block_until_ready(loss)))


# ---------------------------------------------------------------- the timing, as the shared loops do it


def timed(args, rec, it, train_step, pull):
    """First step (compiles), the rest of the warm-up, then --steps timed steps with one pull at the end."""
    xb, yb = next(it)
    t0 = time.perf_counter()
    pull(train_step(xb, yb))
    rec["first_step_s"] = round(time.perf_counter() - t0, 4)
    for _ in range(args.warmup - 1):
        loss = train_step(*next(it))
    pull(loss)
    s0 = snap()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        loss = train_step(*next(it))
    rec["final_loss"] = pull(loss)
    rec.update(rate(args.steps, time.perf_counter() - t0, args.batch))
    rec.update(contention(s0, snap()))


def main():
    ap = base_parser(__doc__)
    ap.add_argument("--framework", choices=["flax", "torch"], required=True)
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    args = ap.parse_args()
    if args.mode != "throughput":
        raise SystemExit("resnet_reference.py measures --mode throughput only")
    rec = dict(kind="train", model="resnet_mnist", mode=args.mode, batch=args.batch, lr=args.lr, tag=args.tag)
    (run_flax if args.framework == "flax" else run_torch)(args, rec)
    emit(rec, args.json)


if __name__ == "__main__":
    main()
