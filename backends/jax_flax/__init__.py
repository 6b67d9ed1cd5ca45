"""The JAX/Flax backend: IR models lowered to Flax linen (`specc.backends.jax_flax`).

Why linen rather than nnx: the runner's train step is a pure function
`step(params, batch_stats, opt_state, x, y, rng)` jitted with donated buffers.
Linen modules are stateless descriptions whose variables are a plain pytree,
so `module.apply(variables, x, True, noise, mutable=["batch_stats"])` is
already that pure function: it jits, donates, `jax.grad`s and shards with nothing in
between. nnx keeps state inside mutable Python objects; in a functional step it
needs `nnx.split`/`nnx.merge` (or `nnx.jit` with its graph traversal on every
call) to get the same pytree back, which adds overhead and a second way of
holding state without buying specc anything: the IR, not user Python code,
defines the model. Linen's variables also map one-to-one onto canonical
weights (see `convert`).

Modules:
  layers       one `lower_*` function per IR kind in the table `LOWER` and the
               linen `SpeccModule` that runs a model's graph, each value in its
               own layout (NHWC or channels-first)
  recurrent    the custom LSTM/GRU cells; activations: the activation table
  convert  canonical weights <-> Flax variables, exact both ways
  xla_flags    XLA:CPU settings specc picks where measured faster (applied
               when this package is imported; SPECC_XLA_DEFAULTS=0 turns
               them off)

Backend API (see specc.backend): `build`, `to_native`, `from_native`, `run`,
`forward_train`, `gradients`, plus `apply_fn` for the runner. Inputs and
outputs are channels-first numpy batches; NHWC is an internal detail.

Dropout masks are not jax.random's: a training forward takes a
`DropoutNoise` (seed, global step, batch) and draws specc.noise's masks, the
ones the PyTorch backend draws, so both backends train the same network.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Mapping

from . import xla_flags

# Before anything can start jax's CPU backend (importing jax does not; the
# first device query or computation does): specc's XLA:CPU defaults.
xla_flags.apply_env()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax import lax  # noqa: E402

from specc import ir  # noqa: E402

from .convert import from_native, params_to_canonical, to_native  # noqa: E402
from .layers import LOWER, SpeccModule, output_activation  # noqa: E402
from .noise import DropoutNoise  # noqa: E402
from .parallel import start_world  # noqa: E402

__all__ = [
    "DropoutNoise",
    "LOWER",
    "PRECISIONS",
    "SpeccModule",
    "apply_fn",
    "build",
    "compute_args",
    "forward_train",
    "from_native",
    "gan_trainer",
    "gradients",
    "output_activation",
    "run",
    "start_world",
    "to_native",
]

ApplyFn = Callable[[Mapping[str, Any], jax.Array, bool, Any], tuple[jax.Array, dict]]

# --precision (specc.plan.PRECISIONS): "mixed" computes the forward and backward
# in bfloat16 (see SpeccModule and the trainers), the same meaning as the
# PyTorch backend's torch.autocast to bfloat16.
PRECISIONS = ("f32", "mixed")


def compute_args(precision: str) -> dict[str, Any]:
    """`apply_fn`'s keyword arguments for a plan's precision: none for "f32"
    (the f32 model exactly as before); for "mixed" the bf16 compute dtype
    (parameters stay f32 and are cast inside each layer) and the default
    dot/conv precision, since bf16 operands have no higher one to ask for."""
    if precision == "f32":
        return {}
    if precision == "mixed":
        return {"dtype": jnp.bfloat16, "precision": lax.Precision.DEFAULT}
    raise ValueError(f"the jax backend has no precision '{precision}'; use one of {', '.join(PRECISIONS)}")


def build(model: ir.Model, *, precision: Any = lax.Precision.HIGHEST, logits: bool = False,
          dtype: Any = None) -> SpeccModule:
    """The Flax linen module for `model`. Apply it to the variables from
    `to_native`: `module.apply(variables, x)` for inference, and
    `module.apply(variables, x, train=True, noise=DropoutNoise(step, seed, batch),
    mutable=["batch_stats"])` for training. `logits=True` leaves off the last
    layer's softmax/sigmoid (for fused losses). `dtype=jnp.bfloat16`
    computes in bf16 with f32 parameters and output (see SpeccModule)."""
    return SpeccModule(model, precision=precision, logits=logits, dtype=dtype)


def _uses_dropout(model: ir.Model) -> bool:
    return any(layer.kind == "Dropout" and layer.attrs["rate"] > 0 for layer in model.layers)


def apply_fn(model: ir.Model, *, logits: bool = False, precision: Any = lax.Precision.HIGHEST,
             dtype: Any = None) -> ApplyFn:
    """A pure, jit-friendly `(variables, x, train, noise) -> (y, new_batch_stats)`.

    `variables` is the pytree of `to_native` ({"params", "batch_stats"});
    `train` must be a Python bool (close over it or mark it static); `noise`
    is a `DropoutNoise` (e.g. `DropoutNoise(step, seed=plan.seed,
    batch=plan.batch)`; its step may be traced) that the Dropout masks are
    drawn at, the masks the PyTorch backend draws at that seed and step, or
    None when the model has no dropout or `train` is False (then it is not
    looked at). In inference mode the batch stats come back unchanged.
    `dtype`: the compute dtype (None: f32; see SpeccModule).
    """
    module = build(model, precision=precision, logits=logits, dtype=dtype)
    needs_noise = _uses_dropout(model)

    def apply(variables, x, train: bool, noise: DropoutNoise | None = None):
        if not train:
            return module.apply(variables, x, train=False), variables.get("batch_stats", {})
        if not needs_noise:
            noise = None
        elif not isinstance(noise, DropoutNoise):
            raise ValueError(f"model {model.name} has Dropout: a training-mode forward needs a DropoutNoise "
                             f"(the seed and step its masks are drawn at; no longer an rng key), got {noise!r}")
        y, updates = module.apply(variables, x, True, noise, mutable=["batch_stats"])
        return y, updates.get("batch_stats", {})

    return apply


@functools.lru_cache(maxsize=64)
def _compiled(key: str):
    """Jitted inference, training and gradient functions for one model (by its
    JSON), so repeated calls reuse the compiled code instead of retracing."""
    model = ir.Model.from_json(key)
    apply = apply_fn(model)

    def infer(variables, x):
        return apply(variables, x, False, None)[0]

    def train(variables, x, noise):
        return apply(variables, x, True, noise)

    def mse(params, batch_stats, x, target):
        y, _ = apply({"params": params, "batch_stats": batch_stats}, x, False, None)
        return jnp.mean(jnp.square(y - target))

    return jax.jit(infer), jax.jit(train), jax.jit(jax.value_and_grad(mse))


def _key(model: ir.Model) -> str:
    return model.to_json(indent=None)


def _batch(model: ir.Model, x) -> np.ndarray:
    dtype = np.int32 if model.input_dtype == "int32" else np.float32
    x = np.asarray(x, dtype=dtype)
    if x.shape[1:] != tuple(model.input_shape):
        raise ValueError(f"model {model.name} takes a batch of shape [N, {', '.join(map(str, model.input_shape))}], "
                         f"got {list(x.shape)}")
    return x


def run(model: ir.Model, weights: Mapping[str, np.ndarray], x) -> np.ndarray:
    """Inference-mode forward pass (dropout off, BatchNorm on moving stats)."""
    infer, _, _ = _compiled(_key(model))
    return np.asarray(infer(to_native(model, weights), _batch(model, x)))


def forward_train(model: ir.Model, weights: Mapping[str, np.ndarray], x, seed: int = 0):
    """Training-mode forward: `(y, weights)` where the returned weights are
    `weights` with BatchNorm moving statistics updated (Keras convention).
    Dropout masks are specc.noise's at (`seed`, step 0), `x` one batch."""
    _, train, _ = _compiled(_key(model))
    variables = to_native(model, weights)
    x = _batch(model, x)
    y, batch_stats = train(variables, x, DropoutNoise(step=0, seed=seed, batch=len(x)))
    updated = from_native(model, {"params": variables["params"], "batch_stats": batch_stats})
    return np.asarray(y), updated


def gradients(model: ir.Model, weights: Mapping[str, np.ndarray], x, target, loss: str = "mse"):
    """`(loss value, grads)`: an inference-mode forward, loss "mse" (the mean of
    squared errors over all elements), and canonical-layout gradients of every
    trainable weight."""
    if loss != "mse":
        raise ValueError(f"gradients supports loss 'mse', got '{loss}'")
    _, _, grad = _compiled(_key(model))
    variables = to_native(model, weights)
    target = np.asarray(target, dtype=np.float32)
    value, grads = grad(variables["params"], variables["batch_stats"], _batch(model, x), target)
    return float(value), params_to_canonical(model, grads)


def trainer(model: ir.Model, plan, weights, device: str = "cpu", world=None):
    """The compiled train and eval steps for specc.runner (see `train`);
    `world` (specc.distributed.World): data parallel over its devices."""
    from specc.distributed import SINGLE

    from .train import Trainer

    return Trainer(model, plan, weights, device, world or SINGLE)


def gan_trainer(generator: ir.Model, discriminator: ir.Model, plan, g_weights, d_weights, latent: int,
                device: str = "cpu", world=None):
    """The GAN recipe's trainer: one jitted D-then-G step (see `gan`)."""
    from specc.distributed import SINGLE

    from .gan import GanTrainer

    return GanTrainer(generator, discriminator, plan, g_weights, d_weights, latent, device, world or SINGLE)
