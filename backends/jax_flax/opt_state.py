"""Canonical optimiser state (specc.plan.optimizer_state_shapes) <-> the
state tree of train.make_optimizer ({"count", one params-shaped tree per
slot}), for trainers that hold several models' states (the GAN pair). The
supervised Trainer does the same inline; the slot trees have the params'
structure, already in canonical layout, so conversion is only a renaming."""

from __future__ import annotations

from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from specc import ir
from specc.plan import check_optimizer_state, optimizer_slots, step_key

from .convert import params_to_canonical
from .train import _canonical_to_params


def to_canonical(model: ir.Model, call: ir.Call, opt) -> dict[str, np.ndarray]:
    """`opt` (device or host tree) -> {"<opt>/step": int64, "<opt>/<slot>/<key>": float32}."""
    opt = jax.device_get(opt)
    state = {step_key(call): np.asarray(opt["count"], np.int64)}
    for slot in optimizer_slots(call):
        for key, value in params_to_canonical(model, opt[slot]).items():
            state[f"{call.name}/{slot}/{key}"] = value
    return state


def from_canonical(model: ir.Model, call: ir.Call, state: Mapping[str, np.ndarray], params) -> dict:
    """The optimiser tree for canonical `state` (RunError naming the key when
    it does not fit); `params` gives the tree structure every slot must have."""
    check_optimizer_state(model, call, state)
    opt = {"count": jnp.asarray(int(np.asarray(state[step_key(call)])), jnp.int32)}
    for slot in optimizer_slots(call):
        prefix = f"{call.name}/{slot}/"
        opt[slot] = _canonical_to_params(model, {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})
        if jax.tree.structure(opt[slot]) != jax.tree.structure(params):
            raise AssertionError("the canonical optimiser slots do not rebuild the params tree")
    return opt


def step_count(call: ir.Call, state: Mapping[str, np.ndarray]) -> int:
    return int(np.asarray(state[step_key(call)]))
