"""Keras's optimiser updates in torch, every hyperparameter set explicitly.

specc's optimisers are Keras's (defaults and formulas, keras/src/optimizers,
Keras 3), so both backends make the same update. torch.optim is used where
its update is Keras's or can be made so exactly; the rest are small
foreach-based `torch.optim.Optimizer`s written from Keras's formulas:

- sgd, momentum 0: torch.optim.SGD (p -= lr*g), identical.
- sgd with momentum: Keras keeps the learning rate inside the velocity
  (m = momentum*m - lr*g; p += m, nesterov p += momentum*m - lr*g); torch's
  buffer excludes it, which differs once the lr changes (schedules). KerasSGD.
- adam/adamw: Keras adds epsilon to sqrt(v) before the bias correction
  (p -= lr*sqrt(1-b2^t)/(1-b1^t) * m / (sqrt(v) + eps)); torch adds it to
  sqrt(v_hat). The two agree exactly when torch's eps at step t is
  eps / sqrt(1 - b2^t), which `Update.prepare` sets before every step.
  AdamW's decoupled decay is the same in both (p *= 1 - lr*wd, before the
  Adam update).
- rmsprop: Keras divides by sqrt(v + eps) (epsilon inside the root) and keeps
  lr inside the momentum buffer; torch does neither. KerasRMSprop.
- adagrad: Keras divides by sqrt(acc + eps); torch by sqrt(acc) + eps.
  KerasAdagrad (accumulator starts at `initial_accumulator`).

Optimiser state is keyed by Keras's variable names where the optimiser is
ours (momentum, velocity, accumulator) and by torch's otherwise (Adam's
exp_avg and exp_avg_sq, which are Keras's m and v: the same recurrences).
`canonical_state` and `restore_state` move it to and from the canonical form
(specc.plan.optimizer_state_shapes) with the weights' own layout rules: a slot
has its parameter's shape, so the same exact conversion applies.
"""

from __future__ import annotations

import math
from typing import Iterable, Mapping

import numpy as np
import torch
from torch.optim import Optimizer

from specc.ir import Call, Model
from specc.plan import check_optimizer_state, optimizer_slots, step_key

from . import convert
from .layers import module_names


def _grads(group) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    params = [p for p in group["params"] if p.grad is not None]
    return params, [p.grad for p in params]


class _Eager(Optimizer):
    """An optimiser whose per-parameter state is created up front, so that its
    state_dict is complete before the first step."""

    SLOTS: tuple[tuple[str, str], ...] = ()  # (state name, hyperparameter holding its initial value or "")

    def __init__(self, params, defaults):
        super().__init__(params, defaults)
        for group in self.param_groups:
            for p in group["params"]:
                for name, init in self.SLOTS:
                    if name == "momentum" and not group["momentum"]:
                        continue
                    value = group[init] if init else 0.0
                    self.state[p][name] = torch.full_like(p, value, memory_format=torch.preserve_format)

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            params, grads = _grads(group)
            if params:
                self.update(group, params, grads)

    def update(self, group: dict, params: list[torch.Tensor], grads: list[torch.Tensor]) -> None:
        raise NotImplementedError


class KerasSGD(_Eager):
    """keras.optimizers.SGD with momentum: m = momentum*m - lr*g; p += m
    (nesterov: p += momentum*m - lr*g)."""

    SLOTS = (("momentum", ""),)

    def __init__(self, params, lr: float, momentum: float, nesterov: bool):
        super().__init__(params, dict(lr=lr, momentum=momentum, nesterov=nesterov))

    def update(self, group, params, grads) -> None:
        lr, mom = group["lr"], group["momentum"]
        ms = [self.state[p]["momentum"] for p in params]
        torch._foreach_mul_(ms, mom)
        torch._foreach_add_(ms, grads, alpha=-lr)
        if group["nesterov"]:
            torch._foreach_add_(params, ms, alpha=mom)
            torch._foreach_add_(params, grads, alpha=-lr)
        else:
            torch._foreach_add_(params, ms)


class KerasRMSprop(_Eager):
    """keras.optimizers.RMSprop (centered=False): v = rho*v + (1-rho)*g^2;
    inc = lr*g / sqrt(v + eps); with momentum m = momentum*m + inc, p -= m;
    else p -= inc."""

    SLOTS = (("velocity", ""), ("momentum", ""))

    def __init__(self, params, lr: float, rho: float, momentum: float, epsilon: float):
        super().__init__(params, dict(lr=lr, rho=rho, momentum=momentum, epsilon=epsilon))

    def update(self, group, params, grads) -> None:
        lr, rho, mom = group["lr"], group["rho"], group["momentum"]
        vs = [self.state[p]["velocity"] for p in params]
        torch._foreach_mul_(vs, rho)
        torch._foreach_addcmul_(vs, grads, grads, value=1.0 - rho)
        denom = torch._foreach_add(vs, group["epsilon"])
        torch._foreach_sqrt_(denom)
        inc = torch._foreach_mul(grads, lr)
        torch._foreach_div_(inc, denom)
        if mom:
            ms = [self.state[p]["momentum"] for p in params]
            torch._foreach_mul_(ms, mom)
            torch._foreach_add_(ms, inc)
            torch._foreach_sub_(params, ms)
        else:
            torch._foreach_sub_(params, inc)


class KerasAdagrad(_Eager):
    """keras.optimizers.Adagrad: acc += g^2; p -= lr*g / sqrt(acc + eps)."""

    SLOTS = (("accumulator", "initial_accumulator"),)

    def __init__(self, params, lr: float, initial_accumulator: float, epsilon: float):
        super().__init__(params, dict(lr=lr, initial_accumulator=initial_accumulator, epsilon=epsilon))

    def update(self, group, params, grads) -> None:
        accs = [self.state[p]["accumulator"] for p in params]
        torch._foreach_addcmul_(accs, grads, grads)
        denom = torch._foreach_add(accs, group["epsilon"])
        torch._foreach_sqrt_(denom)
        inc = torch._foreach_mul(grads, group["lr"])
        torch._foreach_div_(inc, denom)
        torch._foreach_sub_(params, inc)


class Update:
    """The optimiser of a plan and what must be set before each of its steps.

    `prepare(lr, t)` sets the learning rate of the coming step and, for Adam,
    the step's epsilon (t = 1 for the first update)."""

    def __init__(self, optimizer: Optimizer, beta2: float | None = None, epsilon: float | None = None):
        self.optimizer = optimizer
        self.beta2, self.epsilon = beta2, epsilon

    def prepare(self, lr: float, t: int) -> None:
        if self.beta2 is None:
            for group in self.optimizer.param_groups:  # load_state_dict replaces the groups
                group["lr"] = lr
        else:
            eps = self.epsilon / math.sqrt(1.0 - self.beta2**t)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
                group["eps"] = eps


def _fused(cls, params: list[torch.Tensor], **kwargs) -> Optimizer:
    """`cls` with torch's fused kernel where this torch has one for these
    params (CPU since torch 2.4, CUDA), which is the fastest; else its default."""
    try:
        return cls(params, fused=True, **kwargs)
    except (RuntimeError, TypeError, ValueError):
        return cls(params, **kwargs)


def make_update(name: str, args: dict, params: Iterable[torch.Tensor]) -> Update:
    """torch optimiser for specc's `name(args)` (every argument explicit)."""
    params = list(params)
    a = {k: (float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v) for k, v in args.items()}
    lr = a["lr"]
    if name == "sgd":
        if a["momentum"] == 0.0:
            return Update(_fused(torch.optim.SGD, params, lr=lr, momentum=0.0, dampening=0.0, weight_decay=0.0,
                                 nesterov=False, maximize=False))
        return Update(KerasSGD(params, lr=lr, momentum=a["momentum"], nesterov=bool(args["nesterov"])))
    if name in ("adam", "adamw"):
        common = dict(lr=lr, betas=(a["beta1"], a["beta2"]), eps=a["epsilon"], amsgrad=False, maximize=False,
                      capturable=False, differentiable=False)
        if name == "adam":
            opt = _fused(torch.optim.Adam, params, weight_decay=0.0, **common)
        else:
            opt = _fused(torch.optim.AdamW, params, weight_decay=a["weight_decay"], **common)
        return Update(opt, beta2=a["beta2"], epsilon=a["epsilon"])
    if name == "rmsprop":
        return Update(KerasRMSprop(params, lr=lr, rho=a["rho"], momentum=a["momentum"], epsilon=a["epsilon"]))
    if name == "adagrad":
        return Update(KerasAdagrad(params, lr=lr, initial_accumulator=a["initial_accumulator"],
                                   epsilon=a["epsilon"]))
    raise ValueError(f"the torch backend has no optimiser '{name}'")


# ---------------------------------------------------------------- canonical state

TORCH_SLOT = {"m": "exp_avg", "v": "exp_avg_sq"}  # Keras's slot name -> torch's, where they differ


def canonical_state(model: Model, call: Call, optimizer: Optimizer,
                    named_params: list[tuple[str, torch.Tensor]], updates: int) -> dict[str, np.ndarray]:
    """The optimiser's state in canonical form: "<opt>/<slot>/<weight key>" in
    Keras layouts, and "<opt>/step". A slot not made yet (Adam before its
    first step) is its initial value, zero."""
    trainable = {k for k, w in model.weight_specs().items() if w.trainable}
    state = {step_key(call): np.asarray(updates, np.int64)}
    for slot in optimizer_slots(call):
        name = TORCH_SLOT.get(slot, slot)
        native = {n: optimizer.state[p].get(name, torch.zeros_like(p)) for n, p in named_params}
        for key, value in convert.from_native(model, native, only=trainable).items():
            state[f"{call.name}/{slot}/{key}"] = value
    return state


def restore_state(model: Model, call: Call, optimizer: Optimizer, named_params: list[tuple[str, torch.Tensor]],
                  state: Mapping[str, np.ndarray]) -> int:
    """Put canonical state into the optimiser (refusing state that does not
    fit: RunError naming the key); returns the number of updates applied."""
    check_optimizer_state(model, call, state)
    updates = int(np.asarray(state[step_key(call)]))
    for slot in optimizer_slots(call):
        prefix = f"{call.name}/{slot}/"
        native = _slot_to_native(model, {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})
        for n, p in named_params:
            value = torch.from_numpy(np.ascontiguousarray(native[n], dtype=np.float32).copy())
            optimizer.state[p][TORCH_SLOT.get(slot, slot)] = value.to(device=p.device, dtype=p.dtype)
    if call.name in ("adam", "adamw"):
        _set_adam_steps(optimizer, updates)
    return updates


def _slot_to_native(model: Model, canonical: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Canonical arrays of the trainable weights -> {native parameter name:
    array}, by the weights' rules (convert.RULES)."""
    native = {}
    for layer, mod in zip(model.layers, module_names(model)):
        for rule in convert.layer_rules(layer):
            key = layer.weight_key(rule.canonical)
            if key in canonical:
                for name, value in zip(rule.native, rule.to_native(np.asarray(canonical[key], np.float32))):
                    native[f"{mod}.{name}"] = value
    return native


def _set_adam_steps(optimizer: Optimizer, updates: int) -> None:
    """torch's per-parameter Adam step, made as torch makes it: a float32
    scalar on the parameter's device for the fused and capturable kernels,
    on the CPU otherwise."""
    for group in optimizer.param_groups:
        on_device = group.get("fused") or group.get("capturable")
        for p in group["params"]:
            device = p.device if on_device else torch.device("cpu")
            optimizer.state[p]["step"] = torch.tensor(float(updates), dtype=torch.float32, device=device)
