"""Graph inference overhead: specc's ResNet-50 forward pass against the same
network hand-written in the same framework, same batch, weights and machine,
in one process, interleaved (specc, hand-written, specc, ...) to share noise.

    python benchmarks/forward_resnet50.py                  # both backends, batch 8, 224x224
    python benchmarks/forward_resnet50.py --backend torch --batch 16 --repeats 3

The network is specs/resnet50.spec (Keras's applications.ResNet50, channels
first: stride on the first 1x1 conv of a bottleneck, convolutions with bias,
BatchNorm epsilon 1.001e-5, a projection shortcut at the start of each stage,
softmax output). Where that spec does not load, the same graph is built here
with make_layer. Weights are the canonical initial weights with biases and
BatchNorm statistics perturbed, so a wrongly mapped weight shows.

torch: `specc.build(model, backend="torch")` in eval mode under
`torch.inference_mode()`, against a plain nn.Module ResNet-50 with bottleneck
blocks (in-place `+=` and ReLU, as torchvision writes it) holding the same
weights. Both take the same NCHW float32 tensor.

jax: the jitted inference function that `specc.run(..., backend="jax")` calls
(channels-first input, transposed to NHWC inside), against a plain linen NHWC
ResNet-50 under `jax.jit` fed NHWC input. Both compute at Precision.HIGHEST
(the default on CPU gives identical results and speed).

Before timing, both outputs are checked to agree (1e-4 of the largest output).
Prints samples/s (median of --repeats) and the ratio specc / hand-written.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from functools import partial
from pathlib import Path

import numpy as np

from forward_lenet import Timer  # benchmarks/ is on sys.path when run as a script

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "specs" / "resnet50.spec"
EPS = 1.001e-5  # Keras's ResNet BatchNorm epsilon
STAGES = ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2))  # filters, blocks, stride of the first
TOL = 1e-4


# ---------------------------------------------------------------- the specc model


def _build_ir():
    """ResNet-50 as IR built with make_layer (what resnet50.spec says)."""
    from specc.catalogue import make_layer
    from specc.ir import INPUT, Model

    layers, shapes, counts = [], {INPUT: (3, 224, 224)}, {}

    def add(kind, prefix, inputs, **args):
        snake = prefix + {"Conv2D": "conv2d", "BatchNorm": "batch_norm", "ReLU": "relu", "Add": "add",
                          "MaxPool": "max_pool", "GlobalAvgPool": "global_avg_pool", "Dense": "dense"}[kind]
        counts[snake] = counts.get(snake, 0) + 1
        name = f"{snake}_{counts[snake]}"
        in_shape = [shapes[i] for i in inputs] if kind == "Add" else shapes[inputs[0]]
        layers.append(make_layer(kind, name, in_shape, inputs=tuple(inputs), **args))
        shapes[name] = layers[-1].output_shape
        return name

    def conv_bn(prefix, x, filters, kernel, stride=1, padding="valid"):
        x = add("Conv2D", prefix, [x], filters=filters, kernel=kernel, stride=stride, padding=padding)
        return add("BatchNorm", prefix, [x], epsilon=EPS)

    x = add("ReLU", "", [conv_bn("", INPUT, 64, 7, 2, 3)])
    x = add("MaxPool", "", [x], size=3, stride=2, padding=1)
    for s, (filters, blocks, stride) in enumerate(STAGES, start=1):
        for b in range(1, blocks + 1):
            p = f"stage_{s}/bottleneck_{b}/"
            y = add("ReLU", p, [conv_bn(p, x, filters, 1, stride if b == 1 else 1)])
            y = add("ReLU", p, [conv_bn(p, y, filters, 3, padding="same")])
            y = conv_bn(p, y, 4 * filters, 1)
            shortcut = conv_bn(f"stage_{s}/", x, 4 * filters, 1, stride) if b == 1 else x
            x = add("ReLU", f"stage_{s}/", [add("Add", f"stage_{s}/", [y, shortcut])])
    x = add("GlobalAvgPool", "", [x])
    add("Dense", "", [x], units=1000, activation="softmax")
    return Model("resnet50", (3, 224, 224), tuple(layers))


def resnet50():
    """(model, where it came from, canonical weights)."""
    import specc

    try:
        model, source = specc.load(SPEC)["resnet50"], str(SPEC.relative_to(ROOT))
    except (OSError, specc.SpecError, KeyError):
        model, source = _build_ir(), "built with make_layer"
    weights = specc.init_weights(model, 0)
    rng = np.random.default_rng(0)
    for key, value in weights.items():
        if key.endswith("moving_variance"):
            weights[key] = rng.uniform(0.5, 1.5, value.shape).astype(np.float32)
        elif not key.endswith("/kernel"):
            weights[key] = (value + rng.normal(0, 0.1, value.shape)).astype(np.float32)
    return model, source, weights


def weighted_nodes(model):
    """The IR nodes that hold weights, in topological order: stem conv and BN,
    then per block conv1, bn1, conv2, bn2, conv3, bn3 and the projection's
    conv and BN, then the Dense: the order the hand-written networks list them."""
    return [layer for layer in model.layers if layer.weights]


def check(name: str, ours: np.ndarray, theirs: np.ndarray) -> None:
    scale = float(np.max(np.abs(theirs)))
    if ours.shape != theirs.shape or not np.allclose(ours, theirs, rtol=TOL, atol=TOL * scale):
        diff = np.max(np.abs(ours - theirs)) if ours.shape == theirs.shape else float("nan")
        raise SystemExit(f"{name}: specc and hand-written outputs differ (max |diff| {diff:.3g}, "
                         f"largest output {scale:.3g}); the comparison would not be fair")


# ---------------------------------------------------------------- torch


def torch_resnet50():
    import torch
    from torch import nn

    class Bottleneck(nn.Module):
        def __init__(self, cin: int, filters: int, stride: int, project: bool):
            super().__init__()
            self.conv1, self.bn1 = nn.Conv2d(cin, filters, 1, stride), nn.BatchNorm2d(filters, eps=EPS)
            self.conv2, self.bn2 = nn.Conv2d(filters, filters, 3, padding=1), nn.BatchNorm2d(filters, eps=EPS)
            self.conv3, self.bn3 = nn.Conv2d(filters, 4 * filters, 1), nn.BatchNorm2d(4 * filters, eps=EPS)
            self.shortcut = (nn.Sequential(nn.Conv2d(cin, 4 * filters, 1, stride), nn.BatchNorm2d(4 * filters, eps=EPS))
                             if project else None)

        def forward(self, x):
            y = torch.relu_(self.bn1(self.conv1(x)))
            y = torch.relu_(self.bn2(self.conv2(y)))
            y = self.bn3(self.conv3(y))
            y += x if self.shortcut is None else self.shortcut(x)
            return torch.relu_(y)

    class ResNet50(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1, self.bn1 = nn.Conv2d(3, 64, 7, 2, 3), nn.BatchNorm2d(64, eps=EPS)
            self.pool = nn.MaxPool2d(3, 2, 1)
            blocks, cin = [], 64
            for filters, n, stride in STAGES:
                for b in range(n):
                    blocks.append(Bottleneck(cin, filters, stride if b == 0 else 1, b == 0))
                    cin = 4 * filters
            self.blocks = nn.Sequential(*blocks)
            self.fc = nn.Linear(cin, 1000)

        def forward(self, x):
            x = self.pool(torch.relu_(self.bn1(self.conv1(x))))
            x = self.blocks(x).mean(dim=(2, 3))
            return torch.softmax(self.fc(x), dim=1)

        def weighted(self):
            yield self.conv1
            yield self.bn1
            for block in self.blocks:
                yield from (block.conv1, block.bn1, block.conv2, block.bn2, block.conv3, block.bn3)
                if block.shortcut is not None:
                    yield from block.shortcut
            yield self.fc

    return ResNet50()


def torch_load(net, model, weights) -> None:
    """Canonical weights into the hand-written net, converted by hand."""
    import torch

    def put(param, value):
        if tuple(param.shape) != value.shape:
            raise SystemExit(f"hand-written torch ResNet-50 does not match the spec: "
                             f"{tuple(param.shape)} vs {value.shape}")
        param.copy_(torch.from_numpy(np.ascontiguousarray(value)))

    with torch.no_grad():
        for module, layer in zip(net.weighted(), weighted_nodes(model), strict=True):
            w = lambda p: weights[layer.weight_key(p)]  # noqa: E731
            if layer.kind == "BatchNorm":
                for param, key in (("weight", "gamma"), ("bias", "beta"), ("running_mean", "moving_mean"),
                                   ("running_var", "moving_variance")):
                    put(getattr(module, param), w(key))
                continue
            kernel = w("kernel")
            put(module.weight, kernel.transpose(3, 2, 0, 1) if kernel.ndim == 4 else kernel.T)  # OIHW / [out, in]
            put(module.bias, w("bias"))


def torch_pair(model, weights, x: np.ndarray, seconds: float) -> tuple[Timer, Timer]:
    import torch

    from specc.backend import get

    ours = get("torch").build(model, weights).eval()  # specc.build, holding these canonical weights
    theirs = torch_resnet50().eval()
    torch_load(theirs, model, weights)
    xt = torch.from_numpy(x)

    def infer(net):
        def call():
            with torch.inference_mode():
                return net(xt)
        return call

    check("torch", infer(ours)().numpy(), infer(theirs)().numpy())
    return Timer(infer(ours), lambda _: None, len(x), seconds), Timer(infer(theirs), lambda _: None, len(x), seconds)


# ---------------------------------------------------------------- jax


def flax_resnet50(precision):
    import flax.linen as nn
    import jax.numpy as jnp

    conv = partial(nn.Conv, padding="VALID", precision=precision)
    bn = partial(nn.BatchNorm, use_running_average=True, epsilon=EPS)

    class Bottleneck(nn.Module):
        filters: int
        stride: int
        project: bool

        @nn.compact
        def __call__(self, x):
            f, s = self.filters, self.stride
            y = nn.relu(bn(name="bn1")(conv(f, (1, 1), strides=s, name="conv1")(x)))
            y = nn.relu(bn(name="bn2")(conv(f, (3, 3), padding=((1, 1), (1, 1)), name="conv2")(y)))
            y = bn(name="bn3")(conv(4 * f, (1, 1), name="conv3")(y))
            if self.project:
                x = bn(name="proj_bn")(conv(4 * f, (1, 1), strides=s, name="proj_conv")(x))
            return nn.relu(y + x)

    class ResNet50(nn.Module):
        @nn.compact
        def __call__(self, x):  # NHWC
            x = nn.relu(bn(name="bn1")(conv(64, (7, 7), strides=2, padding=((3, 3), (3, 3)), name="conv1")(x)))
            x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
            for s, (filters, n, stride) in enumerate(STAGES, start=1):
                for b in range(n):
                    x = Bottleneck(filters, stride if b == 0 else 1, b == 0, name=f"stage{s}_block{b + 1}")(x)
            x = jnp.mean(x, axis=(1, 2))
            return nn.softmax(nn.Dense(1000, precision=precision, name="fc")(x))

    return ResNet50()


def flax_paths():
    """Paths of the hand-written Flax layers that hold weights, in the order of `weighted_nodes`."""
    yield ("conv1",)
    yield ("bn1",)
    for s, (_, n, _) in enumerate(STAGES, start=1):
        for b in range(n):
            block = f"stage{s}_block{b + 1}"
            for leaf in ("conv1", "bn1", "conv2", "bn2", "conv3", "bn3") + (("proj_conv", "proj_bn") if b == 0 else ()):
                yield (block, leaf)
    yield ("fc",)


def flax_variables(model, weights) -> dict:
    """Canonical weights as the hand-written Flax variables (kernels are HWIO in both)."""
    variables: dict = {"params": {}, "batch_stats": {}}
    for path, layer in zip(flax_paths(), weighted_nodes(model), strict=True):
        w = lambda p: weights[layer.weight_key(p)]  # noqa: E731
        if layer.kind == "BatchNorm":
            slots = {"params": {"scale": w("gamma"), "bias": w("beta")},
                     "batch_stats": {"mean": w("moving_mean"), "var": w("moving_variance")}}
        else:
            slots = {"params": {"kernel": w("kernel"), "bias": w("bias")}}
        for collection, leaves in slots.items():
            node = variables[collection]
            for part in path:
                node = node.setdefault(part, {})
            node.update(leaves)
    return variables


def jax_pair(model, weights, x: np.ndarray, seconds: float) -> tuple[Timer, Timer]:
    import jax
    import jax.numpy as jnp
    from jax import lax

    from specc.backend import get

    B = get("jax")
    infer = B._compiled(B._key(model))[0]  # exactly what specc.run(..., backend="jax") executes
    variables = B.to_native(model, weights)
    x_cf = jax.device_put(x)

    net = flax_resnet50(lax.Precision.HIGHEST)
    x_hwc = jax.device_put(np.ascontiguousarray(x.transpose(0, 2, 3, 1)))  # NHWC, as Flax code holds it
    hand = flax_variables(model, weights)
    shapes = jax.tree_util.tree_map(jnp.shape, jax.eval_shape(net.init, jax.random.key(0), x_hwc[:1]))
    if shapes != jax.tree_util.tree_map(np.shape, hand):
        raise SystemExit("hand-written Flax ResNet-50 variables do not match the spec")
    hand = jax.device_put(hand)
    apply = jax.jit(net.apply)

    check("jax", np.asarray(infer(variables, x_cf)), np.asarray(apply(hand, x_hwc)))
    return (Timer(lambda: infer(variables, x_cf), jax.block_until_ready, len(x), seconds),
            Timer(lambda: apply(hand, x_hwc), jax.block_until_ready, len(x), seconds))


# ---------------------------------------------------------------- main


def report(backend: str, ours: list[float], theirs: list[float], args) -> None:
    s, h = statistics.median(ours), statistics.median(theirs)
    print(f"backend {backend}: ResNet-50 forward, batch {args.batch}, 224x224, median of {args.repeats}")
    print(f"  specc            {s:10,.2f} samples/s   runs: {', '.join(f'{v:,.2f}' for v in ours)}")
    print(f"  hand-written     {h:10,.2f} samples/s   runs: {', '.join(f'{v:,.2f}' for v in theirs)}")
    print(f"  ratio specc / hand-written: {s / h:.3f}  (target >= 1.00)")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backend", choices=("jax", "torch", "both"), default="both")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--seconds", type=float, default=3.0, help="approximate length of one measurement")
    args = p.parse_args(argv)

    model, source, weights = resnet50()
    print(f"ResNet-50 from {source}: {model.params:,} params, {len(model.layers)} nodes")
    x = np.random.default_rng(0).random((args.batch, *model.input_shape), dtype=np.float32)
    backends = ("torch", "jax") if args.backend == "both" else (args.backend,)
    pairs = {b: (torch_pair if b == "torch" else jax_pair)(model, weights, x, args.seconds) for b in backends}
    results = {b: ([], []) for b in backends}
    for r in range(args.repeats):
        for b in backends:
            timers = pairs[b] if r % 2 == 0 else pairs[b][::-1]  # alternate who goes first
            rates = [t.measure() for t in timers]
            ours, theirs = rates if r % 2 == 0 else rates[::-1]
            results[b][0].append(ours)
            results[b][1].append(theirs)
    for b in backends:
        report(b, *results[b], args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
