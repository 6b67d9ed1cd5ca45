"""Training-step parity (issue 17): the harness behind tests/test_step_parity.py.

The contract: from the same canonical weights (specc.init_weights) and the
same batches, in training mode, STEPS optimizer steps (SGD with momentum 0.9,
and Adam) give the same weights, BatchNorm moving statistics included, within
TOLERANCE relative per weight array (max|a - b| / max(max|a|, max|b|))

- on jax and on torch (each with its default speed settings),
- with every speed setting on and off (torch: channels_last, torch.compile,
  1 or 2 threads; jax: specc's XLA:CPU defaults),
- on 1 and 2 devices (jax: 2 host CPU devices; torch: 2 gloo workers),
- and in a channels-first Keras twin stepped with `train_on_batch`
  (tests/keras_twins.py; specs without Dropout), a third opinion.

An array whose true gradient is zero is left aside: a bias that feeds only
BatchNorms (which subtract each channel's batch mean, so the bias cancels).
Its gradient is float noise, which Adam's m / sqrt(v) turns into steps of
the learning rate's size in no particular direction. They are found from the
IR (`zero_gradient_keys`), never listed by hand.

The cases pack every layer kind of the catalogue and the graph forms into a
few small models (CASES). The CNN runs on real MNIST batches too: MNIST's
exact zeros make ties in max pooling (the raw image's background, and ReLU's
zeros) and values exactly at ReLU's kink, which random floats never do.

Runs that need a fresh process are made by this module as a script:

    python tests/step_parity.py jax OUT.npz
        every jax run: 1 device with and without specc's XLA defaults, and 2
        host devices (jax makes its host devices when it starts, and XLA
        reads XLA_FLAGS then; the test session's jax has started long before)
    python tests/step_parity.py torch-worker OUT.npz
        one of 2 gloo workers (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT in
        the environment, as torchrun sets them; `launch_torch_workers`
        starts them); rank 0 writes the weights of every 2-device run.

A result file holds arrays keyed "<variant>|<run>|<weight key>", where a run
is "<case>-<optimizer>" (RUNS) or a recipe (RECIPES).
"""

from __future__ import annotations

import dataclasses
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

import specc  # noqa: E402
from specc.ir import Call, Model  # noqa: E402
from specc.options import OPTIMIZERS  # noqa: E402
from specc.plan import Plan, SpeedChoices, make_plan  # noqa: E402

TOLERANCE = 1e-5
STEPS = 3
WORKER_TIMEOUT = 420  # seconds for a worker process; a hang fails the tests instead of CI
EXIT_GRACE = 30  # seconds a worker may take to exit once its results are written

# ---------------------------------------------------------------- the cases

# Every catalogue kind but Dropout and the recurrent ones, and every graph
# form: stride-2 convolutions, BatchNorm before a pool (Conv -> BatchNorm ->
# ReLU -> MaxPool, the reproduction) and after pools, max pooling of
# the raw input (ties among MNIST's zeros), a Conv2D with its zero bias and a
# ReLU on MNIST's blank patches (exact zeros at ReLU's kink), residuals with
# an identity and a projection shortcut, concat of images and of vectors, a
# bias feeding a BatchNorm (left aside, found from the graph),
# ConvTranspose2D. No Dropout: the Keras twin steps it too.
#
# Small on purpose: a bias's or a BatchNorm's gradient sums over batch x
# height x width, and float32 sums that large differ by their order alone
# (jax against torch, channels_last, threads, devices all sum in other
# orders) close to 1e-5 of the array: the convolutions at 28x28 have stride
# 2, the batch is 16, and the rest runs at 7x7 and below.
CNN = """
model cnn {
    input [1, 28, 28]
    concat {
        branch { MaxPool(4) }
        branch {
            Conv2D(4, kernel=3, stride=2, padding=same, bias=false)
            BatchNorm()
            ReLU()
            MaxPool(2)
        }
        branch {
            Conv2D(2, kernel=3, stride=2, padding=same, activation=relu)
            AvgPool(2)
        }
    }
    BatchNorm(momentum=0.9)
    residual {
        Conv2D(7, kernel=3, padding=same)
        BatchNorm()
        ReLU()
        Conv2D(7, kernel=3, padding=same)
    }
    ReLU()
    residual {
        Conv2D(8, kernel=3, stride=2, padding=same, bias=false)
        BatchNorm()
        ReLU()
        Conv2D(8, kernel=3, padding=same, activation=relu)
    } shortcut {
        Conv2D(8, kernel=1, stride=2, bias=false)
        BatchNorm()
    }
    AvgPool(2)
    BatchNorm()
    ConvTranspose2D(4, kernel=3, stride=2, padding=same, activation=tanh)
    concat {
        branch { GlobalAvgPool() }
        branch { Flatten() }
    }
    Dense(10, activation=softmax)
}
train cnn {
    data      = mnist()
    loss      = cross_entropy
    batch     = 16
    epochs    = 1
    seed      = 5
}
"""

# Tokens, Embedding, LSTM (a sequence) and GRU (the last state), Dense and
# BatchNorm on the features of a sequence, a bias into a BatchNorm. Shallow,
# so that the recurrent biases' gradients are not sums that cancel to
# rounding noise. No Dropout: the Keras twin steps it.
SEQ = """
model seq {
    input [8] int
    Embedding(20, 8)
    LSTM(12, return_sequences=true)
    Dense(8)
    BatchNorm()
    ReLU()
    GRU(10)
    Dense(4, activation=softmax)
}
train seq {
    data      = synthetic(samples=48, classes=4, vocab=20)
    loss      = cross_entropy
    batch     = 16
    epochs    = 1
    seed      = 6
}
"""

# Every activation, as a Dense's and as a layer, Dropout on vectors and on a
# sequence, Reshape and Flatten, BatchNorm on vectors.
MLP = """
model mlp {
    input [24]
    Dense(16, activation=relu)
    Dense(16, activation=sigmoid, bias=false)
    BatchNorm()
    Dense(16, activation=tanh)
    Dense(16, activation=leaky_relu)
    Dropout(0.25)
    Dense(16, activation=gelu)
    Dense(16, activation=elu)
    Dense(16, activation=silu)
    Dense(16)
    LeakyReLU(0.2)
    Dense(16)
    ELU()
    Reshape([4, 4])
    Dropout(0.3)
    Dense(6)
    GELU()
    Dense(6)
    SiLU()
    Flatten()
    Dense(12)
    Tanh()
    Dense(12)
    Sigmoid()
    Dense(12)
    ReLU()
    Dense(5)
    Softmax()
}
train mlp {
    data      = synthetic(samples=48, classes=5)
    loss      = cross_entropy
    batch     = 16
    epochs    = 1
    seed      = 7
}
"""

# The reproduction, small: Conv -> BatchNorm -> ReLU -> MaxPool. The
# case torch.compile runs (compiling is slow: one small model).
SMALL = """
model small {
    input [1, 12, 12]
    Conv2D(4, kernel=3, padding=same, bias=false)
    BatchNorm()
    ReLU()
    MaxPool(2)
    Flatten()
    Dense(5, activation=softmax)
}
train small {
    data      = synthetic(samples=48, classes=5)
    loss      = cross_entropy
    batch     = 16
    epochs    = 1
    seed      = 8
}
"""

# Recipes, small versions of specs/gan.spec and specs/autoencoder.spec on MNIST.
# The generator keeps gan.spec's bias before its BatchNorm (left aside).
GAN = """
model generator {
    input [16]
    Dense(7*7*8)
    BatchNorm()
    LeakyReLU(0.01)
    Reshape([8, 7, 7])
    ConvTranspose2D(6, kernel=3, stride=2, padding=same)
    LeakyReLU(0.01)
    ConvTranspose2D(1, kernel=3, stride=2, padding=same, activation=tanh)
}
model discriminator {
    input [1, 28, 28]
    Conv2D(8, kernel=3, stride=2, padding=same)
    LeakyReLU(0.01)
    Dropout(0.3)
    Flatten()
    Dense(1, activation=sigmoid)
}
train generator {
    recipe    = gan(discriminator, latent=16)
    data      = mnist(range=[-1, 1])
    optimizer = adam(lr=2e-4, beta1=0.5)
    batch     = 32
    epochs    = 1
    seed      = 9
}
"""

AUTOENCODER = """
model autoencoder {
    input [1, 28, 28]
    Conv2D(8, kernel=3, padding=same, activation=relu)
    MaxPool(2)
    Conv2D(4, kernel=3, padding=same, activation=relu)
    MaxPool(2)
    ConvTranspose2D(8, kernel=3, stride=2, padding=same, activation=relu)
    ConvTranspose2D(4, kernel=3, stride=2, padding=same, activation=relu)
    Conv2D(1, kernel=3, padding=same, activation=sigmoid)
}
train autoencoder {
    recipe    = autoencoder(noise=0.3)
    data      = mnist()
    loss      = binary_cross_entropy
    optimizer = adam(lr=1e-3)
    batch     = 32
    epochs    = 1
    seed      = 10
}
"""


@dataclass(frozen=True)
class Case:
    name: str
    text: str
    model: str
    data: str  # "mnist" or "synthetic"

    @property
    def spec(self) -> tuple[Model, object]:
        return load(self.text, self.model)


CASES = {c.name: c for c in (
    Case("cnn_mnist", CNN, "cnn", "mnist"),
    Case("cnn_synthetic", CNN, "cnn", "synthetic"),
    Case("seq", SEQ, "seq", "synthetic"),
    Case("mlp", MLP, "mlp", "synthetic"),
    Case("small", SMALL, "small", "synthetic"),
)}

# The two optimisers of the contract: SGD with momentum 0.9, and Adam with
# Keras's defaults (specc's). Adam moves every weight by about its learning
# rate whatever the size of its gradient, so a gradient that is a sum that
# cancels (a relative rounding error d) moves its weight by lr * d more on
# one side than on the other: at 1e-3 that stays well inside 1e-5 of a
# weight array's scale (at 3e-3, the sums' order alone, jax on 1 against 2
# devices, came to 1.5e-5 in a kernel). See also start_weights.
STEP_OPTIMIZERS = {
    "sgdm": Call("sgd", {**OPTIMIZERS["sgd"], "lr": 0.05, "momentum": 0.9}),
    "adam": Call("adam", dict(OPTIMIZERS["adam"])),
}

# "<case>-<optimizer>" of every supervised run on both backends.
RUNS = [f"{c}-{o}" for c in CASES for o in STEP_OPTIMIZERS]
RECIPES = ("gan", "autoencoder")
# Which runs each comparison takes: jax runs (and devices on both backends)
# every case but the small one, which only torch.compile needs; channels_last
# and XLA's settings act on convolutions only; Keras steps the specs without
# Dropout.
JAX_RUNS = [r for r in RUNS if not r.startswith("small-")]
CONV_RUNS = [r for r in JAX_RUNS if r.startswith("cnn_")]
KERAS_RUNS = [r for r in JAX_RUNS if r.startswith(("cnn_mnist-", "seq-"))]
COMPILE_RUNS = ["small-sgdm"]


def load(text: str, name: str):
    program = specc.loads(text)
    return program[name], program.trains[name]


def has_kind(model: Model, kinds: Iterable[str]) -> bool:
    return any(layer.kind in set(kinds) for layer in model.layers)


def split_run(run: str) -> tuple[Case, Call]:
    case, opt = run.rsplit("-", 1)
    return CASES[case], STEP_OPTIMIZERS[opt]


# ---------------------------------------------------------------- data


def _mnist(n: int, pixels: tuple[float, float] | None = None) -> tuple[np.ndarray, np.ndarray]:
    from specc.data import load_dataset

    args = {} if pixels is None else {"range": pixels}
    data = load_dataset(Call("mnist", args), (1, 28, 28), limit=n)
    return data.x_train[:n], data.y_train[:n]


def batches(case: Case, batch: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x, y, order) of STEPS full batches: batch i is rows order[i*batch:(i+1)*batch]."""
    model, train = case.spec
    n = STEPS * batch
    rng = np.random.default_rng(17)
    if case.data == "mnist":
        x, y = _mnist(n)
        x = x.reshape((n, *model.input_shape))
    elif model.input_dtype.startswith("int"):
        vocab = next(layer.attrs["vocab"] for layer in model.layers if layer.kind == "Embedding")
        x = rng.integers(0, vocab, size=(n, *model.input_shape)).astype(np.int32)
        y = rng.integers(0, model.output_shape[-1], size=n).astype(np.int32)
    else:
        x = rng.normal(size=(n, *model.input_shape)).astype(np.float32)
        y = rng.integers(0, model.output_shape[-1], size=n).astype(np.int32)
    order = rng.permutation(n).astype(np.int64)
    return x, y, order


def plan_of(case: Case, optimizer: Call, speed: SpeedChoices = SpeedChoices()) -> Plan:
    model, train = case.spec
    train = train.replace(optimizer=optimizer)
    plan = make_plan(model, train, STEPS * train.batch)
    assert plan.steps_per_epoch == STEPS
    return dataclasses.replace(plan, speed=speed)


ZERO_INITS = ("zeros", "lstm_bias")  # specc's initialisers that start (some) trainable values at 0


def start_weights(case: Case, optimizer: Call | None = None) -> dict[str, np.ndarray]:
    """specc.init_weights of the case's model and seed; for Adam, the
    trainable arrays it starts at zero (biases, BatchNorm's beta, the
    recurrent biases) moved off zero by a seeded N(0, 0.1).

    Adam moves every value by about its learning rate whatever the size of
    its gradient, so an array that starts at zero is, after three steps,
    about 3 * lr everywhere, and its worst value is the one whose gradient
    is smallest: a sum that nearly cancels, whose relative rounding error
    (different summation orders) Adam passes on unscaled. From zero, those
    arrays measured rounding, not the step: torch on 1 against 2 devices
    (the same kernels, the batch's sums split in two) gave 1.1e-5 in a
    Dense bias. SGD steps follow the gradients' size, so SGD runs start at
    specc.init_weights exactly (with its exact zeros at ReLU's kink on
    MNIST's blank background)."""
    model, train = case.spec
    weights = specc.init_weights(model, seed=train.seed)
    if optimizer is not None and optimizer.name == "adam":
        rng = np.random.default_rng(train.seed + 1000)
        for key, spec in sorted(model.weight_specs().items()):
            if spec.trainable and spec.init in ZERO_INITS:
                weights[key] = (weights[key] + rng.normal(0.0, 0.1, spec.shape)).astype(np.float32)
    return weights


# ---------------------------------------------------------------- the zero-gradient arrays


LINEAR_WEIGHTED = ("Dense", "Conv2D", "ConvTranspose2D")
# Kinds whose output moves by the same per-channel constant as their input:
# a constant c per channel (per feature of [F], per feature of [T, F]) added
# to the input is still one after them. Concat and Reshape do so only in the
# cases `_passes_shift` accepts.
SHIFT_PASSING = ("Add", "MaxPool", "AvgPool", "GlobalAvgPool", "Flatten")


def _channel_axis(shape) -> int:
    """The axis a BatchNorm keeps (IR sample shapes): C of [C, H, W], F of [F] and of [T, F]."""
    return 0 if len(shape) in (1, 3) else len(shape) - 1


def _passes_shift(layer) -> bool:
    if layer.kind in SHIFT_PASSING:
        return True
    if layer.kind == "Concat":  # along the channels: each input's channels stay channels
        rank = len(layer.output_shape)
        return layer.attrs["axis"] % rank == _channel_axis(layer.output_shape)
    if layer.kind == "Reshape":  # to features: a constant per position is one per feature
        return len(layer.output_shape) == 1
    return False


def shift_sinks(model: Model, node: str) -> set[str] | None:
    """The BatchNorms that cancel a per-channel constant added to `node`'s
    output, when every path from it reaches a BatchNorm through
    SHIFT_PASSING layers only; None when one reaches anything else (another
    layer, the model's output): then the loss depends on it."""
    output = model.layers[-1].name
    sinks, stack, seen = set(), [node], set()
    while stack:
        name = stack.pop()
        if name in seen:
            continue
        seen.add(name)
        if name == output:
            return None
        for reader in model.consumers(name):
            if reader.kind == "BatchNorm":
                sinks.add(reader.name)
            elif _passes_shift(reader):
                stack.append(reader.name)
            else:
                return None
    return sinks


def zero_gradient_keys(model: Model) -> set[str]:
    """Canonical keys of the arrays left aside, found from the graph.

    A BatchNorm in training subtracts each channel's batch mean (of [F]:
    each feature's), so it cancels any constant per channel added before it.
    An array that only adds such a constant, and reaches nothing but
    BatchNorms (through layers that keep a per-channel constant one:
    SHIFT_PASSING), has a true gradient of zero: the bias of a Dense, Conv2D
    or ConvTranspose2D without an activation, and a BatchNorm's beta. Its
    computed gradient is rounding noise, which SGD scales down but Adam
    turns into steps of the learning rate's size in any direction. The
    moving means of the BatchNorms that cancel it average the constant in,
    so they inherit the noise and are left aside too."""
    keys = set()
    for layer in model.layers:
        if layer.kind in LINEAR_WEIGHTED:
            if not layer.attrs.get("bias", False) or layer.attrs.get("activation", "linear") != "linear":
                continue
            param = "bias"
        elif layer.kind == "BatchNorm":
            param = "beta"
        else:
            continue
        sinks = shift_sinks(model, layer.name)
        if sinks:
            keys.add(layer.weight_key(param))
            keys.update(f"{sink}/moving_mean" for sink in sinks)
    return keys


# ---------------------------------------------------------------- comparing


def relative_differences(a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray]) -> dict[str, float]:
    """max|a - b| / max(max|a|, max|b|) per array (0 where both are all zeros)."""
    assert a.keys() == b.keys(), f"different arrays: {sorted(set(a) ^ set(b))}"
    out = {}
    for key in a:
        x, y = np.asarray(a[key], np.float64), np.asarray(b[key], np.float64)
        assert x.shape == y.shape, f"{key}: shapes {x.shape} and {y.shape}"
        scale = max(float(np.max(np.abs(x), initial=0.0)), float(np.max(np.abs(y), initial=0.0)))
        diff = float(np.max(np.abs(x - y), initial=0.0))
        out[key] = 0.0 if diff == 0.0 else (diff / scale if scale > 0 else float("inf"))
        if not np.all(np.isfinite(x)) or not np.all(np.isfinite(y)):
            out[key] = float("nan")
    return out


def mismatch_report(a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray], aside: set[str],
                    names: tuple[str, str], tolerance: float = TOLERANCE) -> str | None:
    """None when every array but those `aside` agrees within `tolerance`;
    otherwise a message listing every array over it, worst first."""
    rel = relative_differences(a, b)
    bad = [(k, v) for k, v in rel.items() if k not in aside and not v <= tolerance]
    if not bad:
        return None
    bad.sort(key=lambda kv: (-np.inf if np.isnan(kv[1]) else -kv[1], kv[0]))
    checked = len(rel) - len(aside & rel.keys())
    lines = [f"{names[0]} vs {names[1]}: {len(bad)} of {checked} weight arrays differ by more than "
             f"{tolerance:g} (max|a-b| / max|a|), worst first:"]
    lines += [f"  {key}: {value:.3g}" for key, value in bad]
    if aside:
        lines.append(f"  (left aside, zero true gradient: {', '.join(sorted(aside))})")
    return "\n".join(lines)


def assert_same_weights(a, b, aside: set[str], names: tuple[str, str], tolerance: float = TOLERANCE) -> None:
    """Fail with `mismatch_report`. With STEP_PARITY_LOG=FILE in the
    environment, each comparison's worst array is appended to FILE too
    (margins of the passing pairs)."""
    log = os.environ.get("STEP_PARITY_LOG")
    if log:
        rel = {k: v for k, v in relative_differences(a, b).items() if k not in aside}
        worst = max(rel, key=lambda k: (np.nan_to_num(rel[k], nan=np.inf), k))
        test = os.environ.get("PYTEST_CURRENT_TEST", "?").split(" ")[0]
        with open(log, "a", encoding="utf-8") as f:
            f.write(f"{test}\t{names[0]} vs {names[1]}\t{worst}\t{rel[worst]:.3g}\n")
    report = mismatch_report(a, b, aside, names, tolerance)
    if report:
        raise AssertionError(report)


# ---------------------------------------------------------------- stepping in this process


def make_trainer(backend: str, case: Case, optimizer: Call, speed: SpeedChoices = SpeedChoices(), world=None):
    """`backend`'s trainer of the case's model and plan from `start_weights(case)`."""
    from specc.backend import get
    from specc.distributed import SINGLE

    model, _ = case.spec
    trainer = get(backend).trainer(model, plan_of(case, optimizer, speed), start_weights(case, optimizer), "cpu",
                                   world or SINGLE)
    trainer.fresh_state = trainer.get_optimizer_state()
    return trainer


def run_steps(trainer, case: Case) -> dict[str, np.ndarray]:
    """The canonical weights after STEPS training steps of `trainer` from
    `start_weights(case)` on `batches(case)`. A trainer that has stepped
    before (the same model and plan on other data) has its weights and
    optimiser state reset first, so jax compiles nothing again."""
    x, y, order = batches(case, trainer.plan.batch)
    if getattr(trainer, "used", False):
        trainer.set_weights(start_weights(case, trainer.plan.optimizer))
        trainer.set_optimizer_state(trainer.fresh_state)
    trainer.used = True
    data = trainer.put(x, y)
    trainer.begin_epoch(data, order, 0)
    for i in range(STEPS):
        trainer.step(i)
    return trainer.get_weights()


def step_supervised(backend: str, case: Case, optimizer: Call, speed: SpeedChoices = SpeedChoices(),
                    world=None) -> dict[str, np.ndarray]:
    """STEPS steps of a fresh trainer (see run_steps)."""
    return run_steps(make_trainer(backend, case, optimizer, speed, world), case)


def recipe_case(name: str):
    """(models, train block) of a recipe: the generator and discriminator of the GAN, or the autoencoder."""
    if name == "gan":
        program = specc.loads(GAN)
        return (program["generator"], program["discriminator"]), program.trains["generator"]
    program = specc.loads(AUTOENCODER)
    return (program["autoencoder"],), program.trains["autoencoder"]


def recipe_zero_gradient_keys(name: str) -> set[str]:
    models, _ = recipe_case(name)
    if name == "gan":
        return {f"{role}/{k}" for role, m in zip(("generator", "discriminator"), models)
                for k in zero_gradient_keys(m)}
    return zero_gradient_keys(models[0])


def step_recipe(backend: str, name: str) -> dict[str, np.ndarray]:
    """STEPS steps of a recipe; GAN weights keyed "<role>/<key>"."""
    from specc.backend import get

    models, train = recipe_case(name)
    n = STEPS * train.batch
    plan = make_plan(models[0], train, n)
    assert plan.steps_per_epoch == STEPS
    order = np.random.default_rng(23).permutation(n).astype(np.int64)
    if name == "gan":
        g, d = models
        x, _ = _mnist(n, (-1.0, 1.0))
        trainer = get(backend).gan_trainer(g, d, plan, specc.init_weights(g, train.seed),
                                           specc.init_weights(d, train.seed + 1), train.recipe.args["latent"])
        data = trainer.put(x)
    else:
        (m,) = models
        x, _ = _mnist(n)
        trainer = get(backend).trainer(m, plan, specc.init_weights(m, train.seed))
        data = trainer.put(x, None)
    trainer.begin_epoch(data, order, 0)
    for i in range(STEPS):
        trainer.step(i)
    weights = trainer.get_weights()
    if name == "gan":
        return {f"{role}/{k}": v for role, group in weights.items() for k, v in group.items()}
    return weights


def step_keras(case: Case, optimizer: Call) -> dict[str, np.ndarray]:
    """STEPS `train_on_batch` calls of the channels-first Keras twin from the
    same canonical weights on the same batches; canonical weights back."""
    import keras
    from keras_twins import build_twin, load_canonical

    model, _ = case.spec
    assert not has_kind(model, ["Dropout"]), "Keras draws other dropout masks"
    plan = plan_of(case, optimizer)
    x, y, order = batches(case, plan.batch)
    a = optimizer.args
    if optimizer.name == "sgd":
        opt = keras.optimizers.SGD(learning_rate=a["lr"], momentum=a["momentum"], nesterov=a["nesterov"])
    elif optimizer.name == "adam":
        opt = keras.optimizers.Adam(learning_rate=a["lr"], beta_1=a["beta1"], beta_2=a["beta2"],
                                    epsilon=a["epsilon"])
    else:
        raise AssertionError(optimizer.name)
    assert plan.loss == "cross_entropy"
    texts = {"<string>": case.text}
    net = build_twin(model, texts)
    load_canonical(net, start_weights(case, optimizer))
    net.compile(optimizer=opt, loss=keras.losses.SparseCategoricalCrossentropy())
    b = plan.batch
    for i in range(STEPS):
        idx = order[i * b:(i + 1) * b]
        net.train_on_batch(x[idx], y[idx])
    out = {}
    for k in net.layers:
        for variable in k.weights:
            out[f"{k.name.replace('.', '/')}/{variable.path.rsplit('/', 1)[-1]}"] = np.asarray(variable.value)
    return {key: out[key] for key in start_weights(case, optimizer)}


# ---------------------------------------------------------------- result files


def key(variant: str, run: str, weight: str) -> str:
    return f"{variant}|{run}|{weight}"


def pick(results: Mapping[str, np.ndarray], variant: str, run: str) -> dict[str, np.ndarray]:
    prefix = f"{variant}|{run}|"
    got = {k[len(prefix):]: v for k, v in results.items() if k.startswith(prefix)}
    if not got:
        raise AssertionError(f"no {variant} result for {run} (the worker did not produce it)")
    return got


def save(path: Path, results: dict[str, np.ndarray]) -> None:
    tmp = path.with_suffix(".part.npz")
    np.savez(tmp, **results)
    os.replace(tmp, path)


# ---------------------------------------------------------------- the jax process


JAX_VARIANTS = ("jax", "jax_no_xla", "jax_2dev")


def jax_main(out: Path) -> None:
    """Every jax run, in a fresh process started with SPECC_XLA_DEFAULTS=0
    (so nothing is put into XLA_FLAGS when jax starts, and each trainer's
    compiler options decide): "jax" with specc's XLA defaults (switched on
    again before the trainers are made: `xla_flags.compiler_options`), on one
    device; "jax_no_xla" without them; "jax_2dev" with them on 2 host
    devices."""
    from specc.backend import get
    from specc.distributed import SINGLE

    jb = get("jax")
    from specc.backends.jax_flax import xla_flags

    assert not xla_flags._applied, "XLA defaults were put into XLA_FLAGS"
    world = jb.start_world(2)
    assert world.devices == 2
    os.environ[xla_flags.ENV_SWITCH] = "1"
    results: dict[str, np.ndarray] = {}
    trainers = {}  # (model, optimizer, variant): the CNN's MNIST and synthetic runs share one
    for run in JAX_RUNS:
        case, optimizer = split_run(run)
        model, _ = case.spec
        variants = [("jax", SpeedChoices(), SINGLE), ("jax_2dev", SpeedChoices(), world)]
        if has_kind(model, xla_flags.SETTINGS[0].layers):
            variants.append(("jax_no_xla", SpeedChoices(xla_defaults=False), SINGLE))
        for variant, speed, w in variants:
            made = (case.model, run.rsplit("-", 1)[1], variant)
            if made not in trainers:
                trainers[made] = make_trainer("jax", case, optimizer, speed, w)
            weights = run_steps(trainers[made], case)
            results.update({key(variant, run, k): v for k, v in weights.items()})
            _progress(f"{variant} {run}")
    for name in RECIPES:
        results.update({key("jax", name, k): v for k, v in step_recipe("jax", name).items()})
        _progress(f"jax {name}")
    save(out, results)


def torch_worker_main(out: Path) -> None:
    """One of 2 gloo workers: every supervised run on 2 devices (default
    speed settings: channels_last where the model has 4-D weights, and the
    single thread specc gives each of 2 workers on 2 cores)."""
    from specc.backend import get

    tb = get("torch")
    world = tb.start_world(2)
    assert world.devices == 2
    results: dict[str, np.ndarray] = {}
    for run in JAX_RUNS:
        case, optimizer = split_run(run)
        weights = step_supervised("torch", case, optimizer, world=world)
        results.update({key("torch_2dev", run, k): v for k, v in weights.items()})
    if world.rank == 0:
        import torch

        results["threads"] = np.asarray(torch.get_num_threads())
        save(out, results)


def _progress(what: str, _last=[time.process_time()]) -> None:
    now = time.process_time()
    print(f"{what}: {now - _last[0]:.1f} s CPU", flush=True)
    _last[0] = now


def _env(extra: Mapping[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("XLA_FLAGS", "SPECC_XLA_DEFAULTS", "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE",
                        "MASTER_ADDR", "MASTER_PORT", "OMP_NUM_THREADS")}
    env.update({"PYTHONPATH": os.pathsep.join([str(ROOT), str(TESTS)]), "SPECC_OFFLINE": "1", **extra})
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Worker:
    """A worker process (or a group of them) started now, its results read later."""

    def __init__(self, what: str, out: Path, procs: list[subprocess.Popen], logs: list[Path]):
        self.what, self.out, self.procs, self.logs = what, out, procs, logs
        self.started = time.monotonic()
        self._results: dict[str, np.ndarray] | None = None
        self.seconds: float | None = None

    def results(self) -> dict[str, np.ndarray]:
        if self._results is not None:
            return self._results
        deadline = self.started + WORKER_TIMEOUT
        done_at = None  # when the result file appeared: a worker then gets EXIT_GRACE seconds to exit
        while any(p.poll() is None for p in self.procs) and time.monotonic() < deadline:
            if done_at is None and self.out.exists():
                done_at = time.monotonic()
            if done_at is not None and time.monotonic() > done_at + EXIT_GRACE:
                break
            time.sleep(0.2)
        codes = []
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait()
                codes.append("killed (timed out)")
            else:
                codes.append(p.returncode)
        self.seconds = time.monotonic() - self.started
        if not self.out.exists():
            tails = "\n".join(f"--- {log.name}:\n{log.read_text(errors='replace')[-3000:]}" for log in self.logs)
            raise AssertionError(f"{self.what} gave no results (exit {codes}):\n{tails}")
        with np.load(self.out) as f:
            self._results = {k: f[k] for k in f.files}
        self.codes = codes
        return self._results


def _start(args: list[str], env: dict, log: Path) -> subprocess.Popen:
    with open(log, "wb") as f:
        return subprocess.Popen([sys.executable, str(Path(__file__)), *args], env=env, cwd=str(ROOT),
                                stdout=f, stderr=subprocess.STDOUT)


def launch_jax(tmp: Path) -> Worker:
    out, log = tmp / "jax.npz", tmp / "jax.log"
    return Worker("the jax process", out, [_start(["jax", str(out)], _env({"SPECC_XLA_DEFAULTS": "0"}), log)], [log])


def launch_torch_workers(tmp: Path) -> Worker:
    out = tmp / "torch_2dev.npz"
    port = str(free_port())
    procs, logs = [], []
    for rank in range(2):
        log = tmp / f"torch_worker_{rank}.log"
        env = _env({"RANK": str(rank), "WORLD_SIZE": "2", "LOCAL_RANK": str(rank), "LOCAL_WORLD_SIZE": "2",
                    "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port})
        procs.append(_start(["torch-worker", str(out)], env, log))
        logs.append(log)
    return Worker("the 2 torch workers", out, procs, logs)


# ---------------------------------------------------------------- the CLI, as a user runs it

# The reproduction through `specc train`: the runner's own batches
# (seed, order), its data-parallel launch (jax: host devices; torch: the
# elastic launcher's gloo workers) and weights.safetensors. --limit 48 and no
# validation split: three batches of 16.
CLI_SPEC = """
model m {
    input [1, 28, 28]
    Conv2D(4, kernel=3, stride=2, padding=same, bias=false)
    BatchNorm()
    ReLU()
    MaxPool(2)
    Flatten()
    Dense(10, activation=softmax)
}
train m {
    data      = mnist()
    loss      = cross_entropy
    optimizer = sgd(lr=0.05, momentum=0.9)
    batch     = 16
    epochs    = 1
    seed      = 5
}
"""
CLI_LIMIT = 48
CLI_RUNS = ("jax", "jax_2dev", "torch", "torch_2dev")


class CliRun:
    """`specc train` in a subprocess, started now."""

    def __init__(self, tmp: Path, name: str):
        backend, _, devices = name.partition("_")
        spec = tmp / "cli.spec"
        if not spec.exists():
            spec.write_text(CLI_SPEC, encoding="utf-8")
        self.name, self.dir, self.log = name, tmp / f"cli-{name}", tmp / f"cli-{name}.log"
        args = [sys.executable, "-m", "specc", "train", str(spec), "--backend", backend, "--out", str(self.dir),
                "--quiet", "--limit", str(CLI_LIMIT)] + (["--devices", "2"] if devices else [])
        with open(self.log, "wb") as f:
            self.proc = subprocess.Popen(args, env=_env({}), cwd=str(tmp), stdout=f, stderr=subprocess.STDOUT)

    def weights(self) -> dict[str, np.ndarray]:
        if getattr(self, "_weights", None) is None:
            self._weights = self._read()
        return self._weights

    def _read(self) -> dict[str, np.ndarray]:
        try:
            code = self.proc.wait(timeout=WORKER_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = "killed (timed out)"
        path = self.dir / "weights.safetensors"
        if code != 0 or not path.exists():
            raise AssertionError(f"specc train ({self.name}) ended with {code}:\n"
                                 f"{self.log.read_text(errors='replace')[-3000:]}")
        from specc.weights import load_weights

        return dict(load_weights(path))


def cli_model() -> Model:
    return specc.loads(CLI_SPEC)["m"]


if __name__ == "__main__":
    mode, path = sys.argv[1], Path(sys.argv[2])
    if mode == "jax":
        jax_main(path)
    elif mode == "torch-worker":
        torch_worker_main(path)
    else:
        raise SystemExit(f"unknown mode {mode}")
