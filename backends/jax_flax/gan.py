"""The JAX GAN trainer (`recipe = gan(D, latent=N)`): one jitted step over
both models' parameter trees.

Step semantics, the same on the PyTorch backend (backends/pytorch/gan.py),
as PyTorch's DCGAN example:

1. z = specc.noise.gaussian(seed, STREAM_LATENT, step, [size, latent]), where
   `step` counts the GAN steps applied (the generator's optimiser count), and
   fake = G(z): one generator forward per step, in training mode (BatchNorm on
   batch statistics, moving statistics updated once).
2. Discriminator update: d_loss = BCE(D(real), 1) + BCE(D(fake), 0), the sum
   of the two batch means (as the DCGAN example's two backward passes sum
   them), fakes detached so no gradient reaches G. D's final sigmoid is left
   out of the train forward and the BCE is the fused logits form. d_real and
   d_fake are the means of sigmoid(D(.)) in this update.
3. Generator update through the updated D (non-saturating): g_loss =
   BCE(D'(fake), 1) with gradients into G only. `jax.vjp` of G's forward
   from step 1 is pulled back with d g_loss / d fake, so G runs forward once.

D runs three training-mode forwards per step (real, fake, fake again for the
G update), each updating its BatchNorm moving statistics in that order, as in
PyTorch where the module is left in train mode. Each model has its own
optimiser state from the plan's one `optimizer`, and the plan's learning-rate
formula is evaluated per update. Batch i of an epoch is order[i*b:(i+1)*b],
gathered on the device; the last partial batch takes the first rows of that
step's noise. Metrics (sums weighted by batch size and the first step whose
losses were not finite) accumulate in the donated carry: `pull` is the only
host sync. Dropout masks are specc.noise's (noise.keep_mask), as the
PyTorch GAN trainer draws them: G's Dropout layers take slots from 0, D's
count on after G's; G(z) and D(real) are forward 0 of the step, D(fake)
forward 1, D'(fake) for the G update forward 2.

Data parallel (a World of several devices): the same step over a mesh
(parallel.Placement), the real batch and the latent batch split by rows,
everything else replicated; `generate` runs on this process's first device
only, so the chief draws its pictures without the other processes.

Precision and XLA options as in the supervised trainer (train.py): "mixed"
runs every forward of the step (and `generate`) with a bfloat16 compute dtype,
parameters, optimiser state and BatchNorm statistics in f32, each model's
output (G's images, D's logits) cast to f32, so the BCE losses, the gradient
G receives through D, and the metrics are f32. The step and `generate` are
jitted with specc's XLA options for the layers of both models.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

from specc import ir
from specc.distributed import SINGLE, World
from specc.noise import STREAM_LATENT
from specc.plan import Plan

from .. import gan_pair
from . import apply_fn, compute_args, from_native, opt_state, to_native
from .noise import DropoutNoise, gaussian
from .parallel import Placement
from .train import _nonfinite_name, describe, jit_options, make_optimizer

GENERATE_BATCH = 512  # generate() runs G in chunks of this many latent vectors
METRICS = ("d_loss", "g_loss", "d_real", "d_fake")


def bce(logits: jax.Array, label: float) -> jax.Array:
    """Mean binary cross-entropy of logits against a constant label."""
    return jnp.mean(optax.sigmoid_binary_cross_entropy(logits, jnp.full_like(logits, label)))


def _zero_metrics() -> dict:
    sums = {name: jnp.zeros([], jnp.float32) for name in METRICS}
    return {**sums, "samples": jnp.zeros([], jnp.int32), "bad": jnp.full([], -1, jnp.int32),
            "bad_loss": jnp.zeros([], jnp.float32)}


def _stats(new: dict, old: dict) -> dict:
    """A model without BatchNorm returns no batch stats: keep its (empty) ones."""
    return new if new else old


class StepFunctions:
    """The pure, compiled functions of one (G, D, plan, latent): shared by every
    trainer of that pair (module cache), so a second trainer, a resumed run
    or a test never compiles the step again."""

    def __init__(self, generator: ir.Model, discriminator: ir.Model, plan: Plan, latent: int):
        self.seed, self.latent = plan.seed, int(latent)
        self.plan = plan
        compute = compute_args(plan.precision)  # f32: nothing; mixed: bf16 compute (see train.py)
        self.g_apply = apply_fn(generator, **compute)
        self.d_apply = apply_fn(discriminator, logits=True, **compute)  # the fused BCE wants D's logits
        self.optimizer = make_optimizer(plan)
        self.d_first_slot = sum(layer.kind == "Dropout" for layer in generator.layers)  # D's slots follow G's
        self.kinds = {layer.kind for model in (generator, discriminator) for layer in model.layers}
        self.g_kinds = {layer.kind for layer in generator.layers}
        self._infer: dict[str, Any] = {}  # platform -> jitted inference-mode G
        self._compiled: dict[tuple, Any] = {}  # (batch size, shapes, placement) -> executable

    def compiled(self, carry, x_all, order, size: int, place: Placement):
        """The step for batches of `size`, compiled ahead of time (never inside timed steps)."""
        key = (size, x_all.shape, order.shape, x_all.sharding)
        if key not in self._compiled:
            jitted = jax.jit(functools.partial(self.train, place=place), static_argnums=(4,), donate_argnums=(0,),
                             **self.jit_options(place.device))
            self._compiled[key] = jitted.lower(carry, x_all, order, jnp.int32(0), size).compile()
        return self._compiled[key]

    def jit_options(self, device) -> dict[str, Any]:
        return jit_options(self.kinds, self.plan, device)

    def infer(self, variables, z, device):
        """Inference-mode G(z) on `device`'s platform."""
        if device.platform not in self._infer:
            self._infer[device.platform] = jax.jit(lambda variables, z: self.g_apply(variables, z, False)[0],
                                                   **jit_options(self.g_kinds, self.plan, device))
        return self._infer[device.platform](variables, z)

    def train(self, carry, x_all, order, start, size: int, place: Placement):
        split = place.split_rows  # on a mesh: each device takes its rows of the real and latent batches
        real = split(jnp.take(x_all, split(lax.dynamic_slice_in_dim(order, start, size)), axis=0))
        step = carry["step"]
        z = split(gaussian(self.seed, STREAM_LATENT, step, (size, self.latent)))
        g_noise = DropoutNoise(step=step, seed=self.seed, batch=self.plan.batch)
        d_noise = g_noise.replace(first_slot=self.d_first_slot)
        g, d = carry["generator"], carry["discriminator"]

        def g_forward(params):
            return self.g_apply({"params": params, "batch_stats": g["batch_stats"]}, z, True, g_noise)

        fake, pull_back, g_stats = jax.vjp(g_forward, g["params"], has_aux=True)
        d_params, d_opt, d_stats, d_metrics = self.d_update(d, real, lax.stop_gradient(fake), d_noise)

        def g_loss_fn(fake):
            logits, stats = self.d_apply({"params": d_params, "batch_stats": d_stats}, fake, True, d_noise.at(2))
            return bce(logits, 1.0), _stats(stats, d_stats)

        (g_loss, d_stats), fake_grad = jax.value_and_grad(g_loss_fn, has_aux=True)(fake)
        (g_grads,) = pull_back(fake_grad)
        g_updates, g_opt = self.optimizer.update(g_grads, g["opt"], g["params"])
        return place.keep_replicated({
            "generator": {"params": optax.apply_updates(g["params"], g_updates),
                          "batch_stats": _stats(g_stats, g["batch_stats"]), "opt": g_opt},
            "discriminator": {"params": d_params, "batch_stats": d_stats, "opt": d_opt},
            "metrics": _accumulate(carry["metrics"], {**d_metrics, "g_loss": g_loss}, step, size),
            "step": step + 1,
        })

    def d_update(self, d: dict, real, fake, noise: DropoutNoise):
        """One discriminator update on a real (label 1) and a fake (label 0)
        batch: forwards 0 and 1 of D in this step (`noise`)."""

        def loss_fn(params):
            l_real, stats = self.d_apply({"params": params, "batch_stats": d["batch_stats"]}, real, True,
                                         noise.at(0))
            stats = _stats(stats, d["batch_stats"])
            l_fake, stats2 = self.d_apply({"params": params, "batch_stats": stats}, fake, True, noise.at(1))
            return bce(l_real, 1.0) + bce(l_fake, 0.0), (_stats(stats2, stats), l_real, l_fake)

        (d_loss, (stats, l_real, l_fake)), grads = jax.value_and_grad(loss_fn, has_aux=True)(d["params"])
        updates, opt = self.optimizer.update(grads, d["opt"], d["params"])
        metrics = {"d_loss": d_loss, "d_real": jnp.mean(jax.nn.sigmoid(l_real)),
                   "d_fake": jnp.mean(jax.nn.sigmoid(l_fake))}
        return optax.apply_updates(d["params"], updates), opt, stats, metrics


_FUNCTIONS: dict[str, StepFunctions] = {}
_KEEP = 8  # pairs whose compiled steps stay cached


def step_functions(generator: ir.Model, discriminator: ir.Model, plan: Plan, latent: int) -> StepFunctions:
    key = json.dumps([generator.to_dict(), discriminator.to_dict(), _plan_dict(plan), int(latent)])
    if key not in _FUNCTIONS:
        while len(_FUNCTIONS) >= _KEEP:
            _FUNCTIONS.pop(next(iter(_FUNCTIONS)))
        _FUNCTIONS[key] = StepFunctions(generator, discriminator, plan, latent)
    return _FUNCTIONS[key]


def _plan_dict(plan: Plan) -> dict:
    """The plan as JSON-able values (the step cache's key)."""

    def plain(value):
        if isinstance(value, ir.Call):
            return value.to_dict()
        return dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value

    return {f.name: plain(getattr(plan, f.name)) for f in dataclasses.fields(plan)}


class GanTrainer:
    """specc.runner's GAN trainer protocol on one device or a mesh (see the module docstring)."""

    def __init__(self, generator: ir.Model, discriminator: ir.Model, plan: Plan, g_weights, d_weights,
                 latent: int, device: str = "cpu", world: World = SINGLE):
        gan_pair.check_gan_pair(generator, discriminator, latent)
        self.models = {"generator": generator, "discriminator": discriminator}
        self.plan, self.latent = plan, int(latent)
        self.place = Placement(world, device)
        self.device = self.place.device
        self.fns = step_functions(generator, discriminator, plan, latent)
        self.carry = {"generator": self._model_state(generator, g_weights),
                      "discriminator": self._model_state(discriminator, d_weights),
                      "metrics": self.place.put(_zero_metrics()),
                      "step": self.place.put(jnp.zeros([], jnp.int32))}
        self._steps: dict[int, Any] = {}  # batch size -> this epoch's compiled step
        self._data = self._order = None
        self._full = 0

    def _model_state(self, model: ir.Model, weights) -> dict:
        variables = self.place.put(to_native(model, weights))
        params = variables["params"]
        return {"params": params, "batch_stats": variables.get("batch_stats", {}),
                "opt": self.place.put(self.fns.optimizer.init(params))}

    # ------------------------------------------------------------ data

    def put(self, x: np.ndarray):
        x = np.asarray(x, np.float32)
        shape = tuple(self.models["discriminator"].input_shape)
        if x.shape[1:] != shape:
            raise ValueError(f"the discriminator takes images of shape {list(shape)}, got {list(x.shape[1:])}")
        return self.place.put(x)

    def begin_epoch(self, data, order: np.ndarray, epoch: int) -> None:
        self._data = data
        self._order = self.place.put(np.asarray(order, np.int32))
        n, b = len(order), self.plan.batch
        self._full = n // b
        sizes = ([b] if self._full else []) + ([n % b] if n % b else [])
        self._steps = {size: self.fns.compiled(self.carry, data, self._order, size, self.place) for size in sizes}

    def step(self, i: int) -> None:
        b = self.plan.batch
        size = b if i < self._full else len(self._order) - i * b
        with self.place.guard:  # a dead peer process: one clean error
            self.carry = self._steps[size](self.carry, self._data, self._order, jnp.int32(i * b))

    def pull(self) -> dict:
        m = self.place.fetch(self.carry["metrics"])  # the only sync
        self.carry["metrics"] = self.place.put(_zero_metrics())
        samples, bad = int(m["samples"]), int(m["bad"])
        out = {name: float(m[name]) / max(samples, 1) for name in METRICS}
        return {**out, "samples": samples, "bad_step": bad,
                "bad_value": _nonfinite_name(float(m["bad_loss"])) if bad >= 0 else None}

    # ------------------------------------------------------------ inference

    def generate(self, z: np.ndarray) -> np.ndarray:
        """Inference-mode G(z) (BatchNorm on moving statistics), channels-first numpy."""
        z = np.asarray(z, np.float32).reshape(-1, self.latent)
        g = self.carry["generator"]
        variables = self.place.local({"params": g["params"], "batch_stats": g["batch_stats"]})
        parts = [np.asarray(self.fns.infer(variables, z[s:s + GENERATE_BATCH], self.device))
                 for s in range(0, len(z), GENERATE_BATCH)]
        shape = (0, *self.models["generator"].output_shape)
        return np.concatenate(parts) if parts else np.zeros(shape, np.float32)

    def describe_speed(self) -> str:
        """The speed and precision settings in effect, in words."""
        return describe(self.plan, self.fns.jit_options(self.device))

    # ------------------------------------------------------------ weights and optimiser state

    def get_weights(self) -> dict[str, dict[str, np.ndarray]]:
        out = {}
        for role, model in self.models.items():
            state = self.place.fetch(self.carry[role])
            out[role] = from_native(model, {"params": state["params"], "batch_stats": state["batch_stats"]})
        return out

    def set_weights(self, groups: Mapping[str, Mapping[str, np.ndarray]]) -> None:
        for role, model in self.models.items():
            variables = self.place.put(to_native(model, groups[role]))
            self.carry[role] = {**self.carry[role], "params": variables["params"],
                                "batch_stats": variables.get("batch_stats", {})}

    def get_optimizer_state(self) -> dict[str, dict[str, np.ndarray]]:
        call = self.plan.optimizer
        return {role: opt_state.to_canonical(model, call, self.place.fetch(self.carry[role]["opt"]))
                for role, model in self.models.items()}

    def set_optimizer_state(self, groups: Mapping[str, Mapping[str, np.ndarray]]) -> None:
        """Restore both states; the generator's update count is the step
        counter (noise, dropout), so a resumed run draws what it would have."""
        call = self.plan.optimizer
        opts = {role: opt_state.from_canonical(model, call, groups[role], self.carry[role]["params"])
                for role, model in self.models.items()}
        for role, opt in opts.items():
            self.carry[role] = {**self.carry[role], "opt": self.place.put(opt)}
        step = opt_state.step_count(call, groups["generator"])
        self.carry["step"] = self.place.put(jnp.asarray(step, jnp.int32))


def _accumulate(m: dict, values: dict, step, size: int) -> dict:
    """Add one step's batch means (weighted by its size); keep the first non-finite step."""
    finite = jnp.isfinite(values["d_loss"]) & jnp.isfinite(values["g_loss"])
    first_bad = (m["bad"] < 0) & ~finite
    worst = jnp.where(jnp.isfinite(values["d_loss"]), values["g_loss"], values["d_loss"])
    out = {name: m[name] + values[name] * size for name in METRICS}
    return {**out, "samples": m["samples"] + size, "bad": jnp.where(first_bad, step, m["bad"]),
            "bad_loss": jnp.where(first_bad, worst, m["bad_loss"])}
