"""A training plan: everything a backend needs to compile its train and eval
steps, resolved from a checked train block. Framework-free.

Both backends read the same plan, so the same spec means the same update: the
loss and whether it is fused with the final activation, every optimiser
hyperparameter written out, and one learning-rate formula (`learning_rate`)
that each backend evaluates per step with its own array module.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .ir import Call, Model, Train
from .options import FUSED_ACTIVATION

# specc.noise stream of an autoencoder's evaluation noise (fixed per test sample); apart from
# specc.noise's STREAM_* (1-4) so that it never repeats the training noise.
EVAL_NOISE_STREAM = 101


PRECISIONS = ("f32", "mixed")

# Evaluation (validation each epoch, the test set) runs up to this many samples per call, in whole
# training batches: LeNet's forward on the 2-core CPU costs per image, at 128/256/512/1024 a batch,
# jax 181/149/137/177 us, torch 151/150/149/223 us (README "Per-epoch overhead"). A forward keeps no
# activations for a backward, so four training batches hold less than one training step does.
EVAL_SAMPLES = 512
EVAL_BATCHES = 4


@dataclass(frozen=True)
class SpeedChoices:
    """The user's say over the backends' speed settings (the CLI's flags).
    Each setting keeps results the same up to float rounding; README
    "Performance" has what each was measured to give."""

    channels_last: bool = True  # torch: convolutions' weights and images in channels-last memory
    compile: bool = False  # torch: torch.compile (inductor) of the train forward
    xla_defaults: bool = True  # jax: specc's XLA:CPU settings (backends/jax_flax/xla_flags.py)


@dataclass(frozen=True)
class Plan:
    loss: str  # cross_entropy | binary_cross_entropy | mse | mae
    fused: bool  # train on the logits: the final softmax/sigmoid is left out of the train forward
    logits: bool  # the (trained) output is a logit: true when fused or when the model ends linear
    optimizer: Call  # every hyperparameter explicit (options.OPTIMIZERS defaults filled in)
    schedule: Call
    batch: int
    steps_per_epoch: int
    epochs: int
    seed: int
    metrics: tuple[str, ...]
    accuracy: str | None = None  # categorical | binary | onehot | None (no accuracy for this loss/target)
    # An autoencoder's: the target is the clean input, and the input gets Gaussian noise of this std on the
    # device, drawn from specc.noise (training: stream STREAM_INPUT_NOISE at the global step; evaluation:
    # EVAL_NOISE_STREAM at each sample's index, so a test sample always gets the same noise).
    reconstruct: bool = False
    input_noise: float = 0.0
    # "mixed": bf16 compute of the forward and backward, f32 master weights, optimiser state and loss;
    # "f32" (the default): float32 throughout.
    precision: str = "f32"
    speed: SpeedChoices = SpeedChoices()

    @property
    def total_steps(self) -> int:
        return self.steps_per_epoch * self.epochs

    @property
    def lr(self) -> float:
        return float(self.optimizer.args["lr"])

    @property
    def eval_batch(self) -> int:
        """Samples per evaluation call: whole training batches (so a data-parallel
        batch still splits evenly), up to EVAL_SAMPLES; results differ only by
        the summation order of the loss."""
        return self.batch * max(1, min(EVAL_BATCHES, EVAL_SAMPLES // self.batch))


def make_plan(model: Model, train: Train, train_samples: int, accuracy: str | None = None) -> Plan:
    """`accuracy` is how predictions would be scored against this data's
    targets (specc.runner.accuracy_kind); it is kept only when the train block
    asks for it (`metrics = [accuracy]`), so nothing else is computed."""
    final = model.final_activation
    fused_with = FUSED_ACTIVATION.get(train.loss)
    fused = fused_with is not None and final == fused_with
    logits = fused or (fused_with is not None and final == "linear")
    reconstruct = train.recipe is not None and train.recipe.name == "autoencoder"
    return Plan(
        loss=train.loss,
        fused=fused,
        logits=logits,
        optimizer=train.optimizer,
        schedule=train.schedule,
        batch=train.batch,
        steps_per_epoch=max(1, math.ceil(train_samples / train.batch)),
        epochs=train.epochs,
        seed=train.seed,
        metrics=tuple(train.metrics),
        accuracy=accuracy if "accuracy" in train.metrics else None,
        reconstruct=reconstruct,
        input_noise=float(train.recipe.args.get("noise", 0.0)) if reconstruct else 0.0,
    )


def learning_rate(plan: Plan, step, xp=math):
    """The learning rate at optimiser step `step` (0-based), per step.

    `xp` is the array module (math, numpy or jax.numpy) so that one formula
    serves both backends: constant; cosine with linear warm-up decaying to 0
    over the whole run; step decay by `factor` every `every` steps.
    """
    base = plan.lr
    name, args = plan.schedule.name, plan.schedule.args
    if name == "constant":
        return base * (step * 0 + 1.0)
    if name == "step":
        return base * plan_factor(args["factor"], xp.floor(step / args["every"]), xp)
    if name == "cosine":
        warmup = int(args["warmup"])
        total = max(plan.total_steps, warmup + 1)
        if xp is math:
            if step < warmup:
                return base * (step + 1) / warmup
            return base * 0.5 * (1 + math.cos(math.pi * (step - warmup) / (total - warmup)))
        progress = xp.clip((step - warmup) / (total - warmup), 0.0, 1.0)
        cosine = base * 0.5 * (1 + xp.cos(math.pi * progress))
        if warmup == 0:
            return cosine
        return xp.where(step < warmup, base * (step + 1) / warmup, cosine)
    raise ValueError(f"unknown schedule {name}")


def plan_factor(factor: float, exponent, xp):
    return factor**exponent if xp is math else xp.power(factor, exponent)


# ---------------------------------------------------------------- optimiser state

# The state each optimiser keeps per trainable weight, by Keras's variable
# names (m and v for Adam's first and second moments); a momentum slot exists
# only with a non-zero momentum, as in Keras.
_SLOTS = {"sgd": ("momentum",), "adam": ("m", "v"), "adamw": ("m", "v"),
          "rmsprop": ("velocity", "momentum"), "adagrad": ("accumulator",)}


def optimizer_slots(optimizer: Call) -> tuple[str, ...]:
    slots = _SLOTS.get(optimizer.name)
    if slots is None:
        raise ValueError(f"unknown optimizer {optimizer.name}")
    return tuple(s for s in slots if s != "momentum" or float(optimizer.args.get("momentum", 0.0)))


def step_key(optimizer: Call) -> str:
    """The key of the number of updates applied (Adam's t after the last one)."""
    return f"{optimizer.name}/step"


def optimizer_state_shapes(model: Model, optimizer: Call) -> dict[str, tuple[int, ...]]:
    """The canonical optimiser state of `model`: "<opt>/<slot>/<weight key>"
    with the weight's canonical shape for every trainable weight, and
    "<opt>/step" (a scalar). Both backends save and restore exactly this."""
    shapes = {step_key(optimizer): ()}
    trainable = {key: w.shape for key, w in model.weight_specs().items() if w.trainable}
    for slot in optimizer_slots(optimizer):
        shapes.update({f"{optimizer.name}/{slot}/{key}": tuple(shape) for key, shape in trainable.items()})
    return shapes


def optimizer_state_problem(model: Model, optimizer: Call, shapes: dict[str, tuple[int, ...]]) -> str | None:
    """What keeps saved optimiser state (its keys and shapes) from fitting
    this model and optimiser, naming the first key at fault; None if it fits."""
    expected = optimizer_state_shapes(model, optimizer)
    foreign = next((k for k in shapes if not k.startswith(optimizer.name + "/")), None)
    if foreign is not None:
        return f"it holds {foreign}, which is not {optimizer.name}'s state"
    for key, shape in expected.items():
        if key not in shapes:
            return f"it has no {key}"
        if tuple(shapes[key]) != shape:
            return f"{key} has shape {list(shapes[key])}, expected {list(shape)}"
    unexpected = [k for k in shapes if k not in expected]
    return f"it has an unexpected {unexpected[0]}" if unexpected else None


def check_optimizer_state(model: Model, optimizer: Call, state) -> None:
    """Refuse (RunError naming the key) optimiser state that does not fit."""
    problem = optimizer_state_problem(model, optimizer, {k: tuple(getattr(v, "shape", ())) for k, v in state.items()})
    if problem:
        from .rundir import RunError

        raise RunError(f"the optimiser state does not fit {optimizer.name} on model {model.name}: {problem}")
