"""Activation functions of the Flax lowering, by the IR's activation names."""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

Array = jax.Array


def _gelu(x: Array) -> Array:
    return jax.nn.gelu(x, approximate=False)  # the exact erf form (Keras, PyTorch)


ACTIVATIONS: dict[str, Callable[[Array], Array]] = {
    "linear": lambda x: x,
    "relu": jax.nn.relu,
    "sigmoid": jax.nn.sigmoid,
    "tanh": jnp.tanh,
    "softmax": lambda x: jax.nn.softmax(x, axis=-1),  # last axis of the channels-first shape
    "leaky_relu": lambda x: jax.nn.leaky_relu(x, negative_slope=0.01),
    "gelu": _gelu,
    "elu": lambda x: jax.nn.elu(x, alpha=1.0),
    "silu": jax.nn.silu,
}

# Output activations that `logits=True` leaves off (the runner's fused losses).
LOGIT_ACTIVATIONS = ("softmax", "sigmoid")
