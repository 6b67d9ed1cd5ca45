"""The JAX trainer: the compiled train and eval steps of the supervised and
autoencoder recipes (specc.recipes.supervised's Trainer protocol).

Everything stays on the device: the whole data split is put there once, each
epoch's sample order once, and a step gathers its batch with a dynamic slice
inside the jitted function. Parameters, optimiser state and the metric
accumulators (loss sum, correct count, samples, first non-finite step) are one
carry, donated to each step, so the loop never waits for the host; `pull` is
the only sync. The last, partial batch has its own compiled step, compiled
ahead of time at the first epoch so it never lands in timed steps.

With a World of several devices the same step runs over a mesh
(parallel.Placement): everything replicated, each batch split by rows, the
gradients and BatchNorm's moments all-reduced by XLA.

An autoencoder's plan (`plan.reconstruct`) puts only the inputs: the target
is the clean batch, and the model sees it with Gaussian noise of
`plan.input_noise` added inside the compiled step, drawn from specc.noise at
the step counter (evaluation: at each sample's index), so both backends see
the same noise. Dropout masks are specc.noise's too (noise.keep_mask), at
(seed, layer, global step, sample), the masks the PyTorch trainer draws: a
resumed run repeats them, and they do not depend on the number of devices
(the step is global-view, so its rows are the global batch's).

Precision (`plan.precision`, see `compute_args`): "f32" is float32
throughout. "mixed" runs the model with a bfloat16 compute dtype: inside the
loss function each conv and matmul casts its f32 parameters and its input to
bf16, so the forward and backward convolutions and matmuls are bf16 and the
gradients arrive in f32 through the casts; parameters (master weights),
optimiser state and BatchNorm statistics stay f32, and the model's output is
f32 before the loss and metrics. Evaluation runs the same mixed forward, as
the PyTorch backend's does under autocast.

XLA options: each step is jitted with `xla_flags.compiler_options` for its
model (specc's XLA:CPU settings, per compiled function, so they hold even
where jax started before XLA_FLAGS could be set), unless
`plan.speed.xla_defaults` is off (`--no-xla-defaults`) or SPECC_XLA_DEFAULTS=0.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

from specc import ir
from specc.distributed import SINGLE, World
from specc.noise import STREAM_INPUT_NOISE
from specc.plan import EVAL_NOISE_STREAM, Plan, check_optimizer_state, learning_rate, optimizer_slots, step_key

from . import apply_fn, compute_args, from_native, to_native, xla_flags
from .convert import native_slot, params_to_canonical
from .noise import DropoutNoise, gaussian
from .parallel import Placement

EPSILON = 1e-7  # Keras's backend epsilon: probabilities are clipped to [eps, 1 - eps]


# ---------------------------------------------------------------- optimisers


def make_optimizer(plan: Plan) -> optax.GradientTransformation:
    """Keras's optimiser updates (keras/src/optimizers, Keras 3), every
    hyperparameter from the plan, as one optax transformation; the PyTorch
    backend makes the same updates (backends/pytorch/optim.py). Where Keras
    differs from optax and torch.optim:

    - sgd with momentum keeps the learning rate inside the velocity:
      m = momentum*m - lr*g; p += m (nesterov: p += momentum*m - lr*g);
    - adam adds epsilon to sqrt(v) before the bias correction:
      p -= lr*sqrt(1-b2^t)/(1-b1^t) * m / (sqrt(v) + eps); adamw also
      p -= lr*wd*p (decoupled). The bias corrections 1-b^t are exact to
      float32 (`_one_minus_power`), as torch's doubles are; Keras's float32
      1-b^t is up to 1e-5 off them (rounding of b near 1);
    - rmsprop puts epsilon inside the root and lr inside the momentum buffer:
      inc = lr*g / sqrt(v + eps); with momentum m = momentum*m + inc, p -= m;
    - adagrad divides by sqrt(acc + eps), acc starting at initial_accumulator.

    The learning rate of update `count` (0-based) is `learning_rate(plan,
    count)`, the one formula both backends use.
    """
    a = {k: v for k, v in plan.optimizer.args.items()}
    name = plan.optimizer.name
    if name not in ("sgd", "adam", "adamw", "rmsprop", "adagrad"):
        raise ValueError(f"unknown optimizer {name}")
    tmap = jax.tree.map
    momentum = float(a.get("momentum", 0.0))

    def init(params):
        # One tree per slot of specc.plan.optimizer_slots (Keras's names), plus the update count.
        start = a["initial_accumulator"] if name == "adagrad" else 0.0
        state = {slot: tmap(lambda p: jnp.full_like(p, start), params) for slot in optimizer_slots(plan.optimizer)}
        return {"count": jnp.zeros([], jnp.int32), **state}

    def update(grads, state, params=None):
        count = state["count"]
        lr = learning_rate(plan, count, jnp)
        new = {"count": count + 1}
        if name == "sgd":
            if momentum:
                m = tmap(lambda m, g: momentum * m - lr * g, state["momentum"], grads)
                new["momentum"] = m
                updates = tmap(lambda m, g: momentum * m - lr * g, m, grads) if a["nesterov"] else m
            else:
                updates = tmap(lambda g: -lr * g, grads)
        elif name in ("adam", "adamw"):
            b1, b2, eps = a["beta1"], a["beta2"], a["epsilon"]
            t = (count + 1).astype(jnp.float32)
            m = tmap(lambda m, g: m + (g - m) * (1 - b1), state["m"], grads)
            v = tmap(lambda v, g: v + (g * g - v) * (1 - b2), state["v"], grads)
            new["m"], new["v"] = m, v
            alpha = lr * jnp.sqrt(_one_minus_power(b2, t)) / _one_minus_power(b1, t)
            updates = tmap(lambda m, v: -alpha * m / (jnp.sqrt(v) + eps), m, v)
            if name == "adamw":
                updates = tmap(lambda u, p: u - lr * a["weight_decay"] * p, updates, params)
        elif name == "rmsprop":
            rho, eps = a["rho"], a["epsilon"]
            v = tmap(lambda v, g: rho * v + (1 - rho) * g * g, state["velocity"], grads)
            new["velocity"] = v
            inc = tmap(lambda g, v: lr * g / jnp.sqrt(v + eps), grads, v)
            if momentum:
                m = tmap(lambda m, i: momentum * m + i, state["momentum"], inc)
                new["momentum"] = m
                updates = tmap(lambda m: -m, m)
            else:
                updates = tmap(lambda i: -i, inc)
        else:  # adagrad
            acc = tmap(lambda acc, g: acc + g * g, state["accumulator"], grads)
            new["accumulator"] = acc
            updates = tmap(lambda g, acc: -lr * g / jnp.sqrt(acc + a["epsilon"]), grads, acc)
        return updates, new

    return optax.GradientTransformation(init, update)


def _one_minus_power(beta: float, t: jax.Array) -> jax.Array:
    """1 - beta**t to float32 precision, as -expm1(t log beta) with log beta
    taken in double. In float32, 1 - beta**t cancels: with Adam's beta2 =
    0.999 it is 1.3e-5 off at t = 1 (1.7e-4 for 0.9999), so every step was
    that much off torch's, whose bias corrections are Python doubles."""
    if beta == 0.0:
        return jnp.ones_like(t)
    return -jnp.expm1(t * math.log(beta))


# ---------------------------------------------------------------- losses and metrics


def _per_sample(values: jax.Array) -> jax.Array:
    return values.reshape(values.shape[0], -1).mean(axis=1)


def per_sample_loss(plan: Plan, out: jax.Array, y: jax.Array) -> jax.Array:
    if plan.loss == "cross_entropy":
        if plan.logits:
            return _per_sample(optax.softmax_cross_entropy_with_integer_labels(out, y))
        # Keras: normalise, clip to [eps, 1 - eps], -log p[y] (as the torch backend does)
        p = jnp.clip(out / jnp.sum(out, axis=-1, keepdims=True), EPSILON, 1 - EPSILON)
        return _per_sample(-jnp.log(jnp.take_along_axis(p, y[..., None], axis=-1)[..., 0]))
    if plan.loss == "binary_cross_entropy":
        if plan.logits:
            return _per_sample(optax.sigmoid_binary_cross_entropy(out, y))
        p = jnp.clip(out, EPSILON, 1 - EPSILON)
        return _per_sample(-(y * jnp.log(p) + (1 - y) * jnp.log(1 - p)))
    if plan.loss == "mse":
        return _per_sample(jnp.square(out - y))
    if plan.loss == "mae":
        return _per_sample(jnp.abs(out - y))
    raise ValueError(f"unknown loss {plan.loss}")


def correct_count(plan: Plan, out: jax.Array, y: jax.Array) -> jax.Array:
    """Correct samples; a sample with several predictions (a sequence) counts
    the fraction of them that are right, as the torch backend does."""
    kind = plan.accuracy
    if kind == "categorical":
        hits = jnp.argmax(out, axis=-1) == y
    elif kind == "binary":
        hits = (out > (0.0 if plan.logits else 0.5)) == (y > 0.5)
    elif kind == "onehot":
        hits = jnp.argmax(out, axis=-1) == jnp.argmax(y, axis=-1)
    else:
        return jnp.zeros([], jnp.float32)
    return jnp.sum(_per_sample(hits.astype(jnp.float32)))


def _zero_metrics():
    return {"loss": jnp.zeros([], jnp.float32), "correct": jnp.zeros([], jnp.float32),
            "samples": jnp.zeros([], jnp.int32), "bad": jnp.full([], -1, jnp.int32),
            "bad_loss": jnp.zeros([], jnp.float32)}


def _nonfinite_name(value: float) -> str:
    """How a non-finite loss is named to the user (as the torch trainer does)."""
    return "nan" if np.isnan(value) else "inf" if value > 0 else "-inf"


# ---------------------------------------------------------------- compile settings


def jit_options(model, plan: Plan, device) -> dict[str, Any]:
    """`jax.jit` keyword arguments for a step running `model` (an ir.Model or
    a set of layer kinds) on `device`: specc's XLA options where they apply."""
    if not plan.speed.xla_defaults:
        return {}
    options = xla_flags.compiler_options(model, device.platform)
    return {"compiler_options": options} if options else {}


def describe(plan: Plan, options: dict[str, Any]) -> str:
    """The speed and precision settings in effect, in words."""
    flags = options.get("compiler_options")
    if flags:
        xla = "XLA defaults on (" + ", ".join(f"{k}={v}" for k, v in flags.items()) + ")"
    elif not plan.speed.xla_defaults or not xla_flags.enabled():
        xla = "XLA defaults off"
    else:
        xla = "XLA defaults: none apply"
    return f"{xla}, precision {plan.precision}"


# ---------------------------------------------------------------- the trainer


class Trainer:
    def __init__(self, model: ir.Model, plan: Plan, weights, device: str = "cpu", world: World = SINGLE):
        self.model, self.plan = model, plan
        self.place = Placement(world, device)  # one device, or a mesh of the world's devices
        self.device = self.place.device
        self.apply = apply_fn(model, logits=plan.logits, **compute_args(plan.precision))
        self._jit = jit_options(model, plan, self.device)
        self.optimizer = make_optimizer(plan)
        variables = self.place.put(to_native(model, weights))
        params = variables["params"]
        self.carry = {
            "params": params,
            "batch_stats": variables.get("batch_stats", {}),
            "opt": self.place.put(self.optimizer.init(params)),
            "metrics": self.place.put(_zero_metrics()),
            "step": self.place.put(jnp.zeros([], jnp.int32)),
        }
        self.global_step = 0
        self._train_steps: dict[int, Any] = {}  # batch size -> compiled step
        self._eval_step = jax.jit(self._eval, static_argnums=(5,), donate_argnums=(0,), **self._jit)
        self._data = self._order = None

    # -- data
    def put(self, x: np.ndarray, y: np.ndarray | None):
        """A split on the device; `y` None when the target is the input itself."""
        x_dtype = np.int32 if self.model.input_dtype == "int32" else np.float32
        y_dtype = np.int32 if self.plan.loss == "cross_entropy" else np.float32  # class ids
        return (self.place.put(np.asarray(x, x_dtype)),
                None if y is None else self.place.put(np.asarray(y, y_dtype)))

    def begin_epoch(self, data, order: np.ndarray, epoch: int) -> None:
        self._data = data
        self._order = self.place.put(np.asarray(order, np.int32))
        n, b = len(order), self.plan.batch
        self._full = n // b
        if n % b and (n % b) not in self._train_steps:
            self._compile(n % b)  # ahead of time: never inside timed steps
        if self._full and b not in self._train_steps:
            self._train_steps[b] = jax.jit(self._train, static_argnums=(5,), donate_argnums=(0,), **self._jit)

    def _compile(self, size: int) -> None:
        fn = jax.jit(self._train, static_argnums=(5,), donate_argnums=(0,), **self._jit)
        x, y = self._data
        self._train_steps[size] = fn.lower(self.carry, x, y, self._order, jnp.int32(0), size).compile()

    # -- the compiled step
    def _train(self, carry, x_all, y_all, order, start, size: int):
        split = self.place.split_rows  # on a mesh: each device gathers and computes its rows
        idx = split(lax.dynamic_slice_in_dim(order, start, size))
        if self.plan.reconstruct:
            x, y = self._noisy_input(split(jnp.take(x_all, idx, axis=0)), carry["step"])
        else:
            x, y = split(jnp.take(x_all, idx, axis=0)), split(jnp.take(y_all, idx, axis=0))
        noise = DropoutNoise(step=carry["step"], seed=self.plan.seed, batch=self.plan.batch)
        variables_stats = carry["batch_stats"]

        def loss_fn(params):
            # mixed precision: the module casts params and x to bf16 inside each conv/matmul and returns f32
            out, new_stats = self.apply({"params": params, "batch_stats": variables_stats}, x, True, noise)
            losses = per_sample_loss(self.plan, out, y)
            return jnp.mean(losses), (out, new_stats)

        (loss, (out, new_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(carry["params"])
        updates, opt = self.optimizer.update(grads, carry["opt"], carry["params"])
        params = optax.apply_updates(carry["params"], updates)
        m = carry["metrics"]
        finite = jnp.isfinite(loss)
        first_bad = (m["bad"] < 0) & ~finite
        metrics = {
            "loss": m["loss"] + loss * size,
            "correct": m["correct"] + correct_count(self.plan, out, y),
            "samples": m["samples"] + size,
            "bad": jnp.where(first_bad, carry["step"], m["bad"]),
            "bad_loss": jnp.where(first_bad, loss, m["bad_loss"]),  # tells -inf from inf and NaN
        }
        return self.place.keep_replicated({"params": params, "batch_stats": new_stats if new_stats else variables_stats,
                                           "opt": opt, "metrics": metrics, "step": carry["step"] + 1})

    def _noisy_input(self, x, step):
        """(what the model sees, the target) of an autoencoder's batch: the
        clean input is the target, the model sees it with the step's noise."""
        if not self.plan.input_noise:
            return x, x
        return x + self.plan.input_noise * gaussian(self.plan.seed, STREAM_INPUT_NOISE, step, x.shape), x

    def step(self, i: int) -> None:
        b = self.plan.batch
        size = b if i < self._full else len(self._order) - i * b
        x, y = self._data
        start = jnp.int32(i * b)
        with self.place.guard:  # a dead peer process: one clean error
            if size == b:
                self.carry = self._train_steps[b](self.carry, x, y, self._order, start, b)
            else:  # the ahead-of-time compiled step of the partial batch takes no static size
                self.carry = self._train_steps[size](self.carry, x, y, self._order, start)
        self.global_step += 1

    def pull(self) -> dict:
        m = self.place.fetch(self.carry["metrics"])  # the only sync
        self.carry["metrics"] = self.place.put(_zero_metrics())
        samples = int(m["samples"])
        bad = int(m["bad"])
        return {"loss": float(m["loss"]) / max(samples, 1),
                "accuracy": float(m["correct"]) / max(samples, 1) if self.plan.accuracy else None,
                "samples": samples, "bad_step": bad, "bad_value": _nonfinite_name(float(m["bad_loss"]))}

    # -- evaluation
    def _eval(self, sums, variables, x, y, start, size: int):
        x = self.place.split_rows(x)
        y = None if y is None else self.place.split_rows(y)
        if self.plan.reconstruct:  # noise fixed per sample: sample j draws at step j
            y = x
            if self.plan.input_noise:
                steps = start + jnp.arange(size, dtype=jnp.int32)
                x = x + self.plan.input_noise * gaussian(self.plan.seed, EVAL_NOISE_STREAM, steps, x.shape[1:])
        out, _ = self.apply(variables, x, False, None)  # the train step's precision (mixed: bf16 compute, f32 out)
        losses = per_sample_loss(self.plan, out, y)
        return self.place.keep_replicated({"loss": sums["loss"] + jnp.sum(losses),
                                           "correct": sums["correct"] + correct_count(self.plan, out, y)})

    def evaluate(self, data, batch: int) -> dict:
        x_all, y_all = data
        n = x_all.shape[0]
        variables = {"params": self.carry["params"], "batch_stats": self.carry["batch_stats"]}
        sums = self.place.put({"loss": jnp.zeros([], jnp.float32), "correct": jnp.zeros([], jnp.float32)})
        with self.place.guard:
            for start in range(0, n, batch):
                stop = min(start + batch, n)
                y = None if y_all is None else y_all[start:stop]
                sums = self._eval_step(sums, variables, x_all[start:stop], y, jnp.int32(start), stop - start)
            sums = self.place.fetch(sums)
        return {"loss": float(sums["loss"]) / max(n, 1),
                "accuracy": float(sums["correct"]) / max(n, 1) if self.plan.accuracy else None}

    def describe_speed(self) -> str:
        """The speed and precision settings in effect, in words."""
        return describe(self.plan, self._jit)

    # -- weights and state
    def get_weights(self) -> dict[str, np.ndarray]:
        native = self.place.fetch({"params": self.carry["params"], "batch_stats": self.carry["batch_stats"]})
        return from_native(self.model, native)

    def set_weights(self, weights) -> None:
        variables = self.place.put(to_native(self.model, weights))
        self.carry["params"] = variables["params"]
        self.carry["batch_stats"] = variables.get("batch_stats", {})

    def get_optimizer_state(self) -> dict[str, np.ndarray]:
        """Canonical state (specc.plan.optimizer_state_shapes): each slot tree
        has the params' structure, already in canonical layout, so it is only
        renamed, like the weights."""
        opt = self.place.fetch(self.carry["opt"])
        name = self.plan.optimizer.name
        state = {step_key(self.plan.optimizer): np.asarray(opt["count"], np.int64)}
        for slot in optimizer_slots(self.plan.optimizer):
            for key, value in params_to_canonical(self.model, opt[slot]).items():
                state[f"{name}/{slot}/{key}"] = value
        return state

    def set_optimizer_state(self, state: dict[str, np.ndarray]) -> None:
        """Restore canonical state; the update count also sets the step that
        draws dropout masks, so schedules, bias correction and masks go on."""
        check_optimizer_state(self.model, self.plan.optimizer, state)
        name = self.plan.optimizer.name
        step = int(np.asarray(state[step_key(self.plan.optimizer)]))
        opt = {"count": jnp.asarray(step, jnp.int32)}
        for slot in optimizer_slots(self.plan.optimizer):
            opt[slot] = _canonical_to_params(self.model, {k.split("/", 2)[2]: v for k, v in state.items()
                                                          if k.startswith(f"{name}/{slot}/")})
        params_tree = jax.tree.structure(self.carry["params"])
        if any(jax.tree.structure(opt[slot]) != params_tree for slot in optimizer_slots(self.plan.optimizer)):
            raise AssertionError("the canonical optimiser slots do not rebuild the params tree")
        self.carry["opt"] = self.place.put(opt)
        self.global_step = step
        self.carry["step"] = self.place.put(jnp.asarray(step, jnp.int32))


def _canonical_to_params(model: ir.Model, arrays: dict[str, np.ndarray]) -> dict:
    """Canonical arrays of the trainable weights -> a tree shaped like "params"
    (the reverse of convert.params_to_canonical)."""
    tree: dict[str, dict] = {}
    for layer in model.layers:
        for w in layer.weights:
            collection, native = native_slot(layer, w.name)
            if w.trainable and collection == "params":
                value = np.asarray(arrays[layer.weight_key(w.name)], np.float32)
                tree.setdefault(layer.name, {})[native] = jnp.array(value, copy=True)
    return tree


def trainer(model: ir.Model, plan: Plan, weights, device: str = "cpu", world: World = SINGLE) -> Trainer:
    return Trainer(model, plan, weights, device, world)


__all__ = ["Trainer", "correct_count", "describe", "jit_options", "make_optimizer", "per_sample_loss", "trainer"]
