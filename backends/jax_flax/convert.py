"""Canonical weights <-> Flax variables, both ways, bit-exact.

The native form is the linen variables pytree of `SpeccModule`:

    {"params":      {layer name: {native param: jax array}},
     "batch_stats": {layer name: {"mean": ..., "var": ...}}}

Both collections are always present (possibly empty), so the runner sees one
fixed structure. Because the Flax lowering computes images in NHWC with HWIO
kernels, every native array has exactly its canonical Keras layout (Dense
[in, out], Conv2D [kh, kw, in, out], ConvTranspose2D with transpose_kernel
[kh, kw, out, in], the LSTM/GRU cells hold the canonical arrays): conversion is
only a renaming, so the round trip is exact by construction. Renames:
BatchNorm gamma/beta -> params scale/bias, moving_mean/moving_variance ->
batch_stats mean/var; Embedding embeddings -> embedding.
"""

from __future__ import annotations

from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from specc import ir
from specc.weights import check_weights

# kind -> canonical param -> (collection, native name). Unlisted params keep
# their canonical name in "params".
NATIVE_NAMES: dict[str, dict[str, tuple[str, str]]] = {
    "BatchNorm": {
        "gamma": ("params", "scale"),
        "beta": ("params", "bias"),
        "moving_mean": ("batch_stats", "mean"),
        "moving_variance": ("batch_stats", "var"),
    },
    "Embedding": {"embeddings": ("params", "embedding")},
}

COLLECTIONS = ("params", "batch_stats")


def native_slot(layer: ir.Layer, param: str) -> tuple[str, str]:
    """(collection, native name) of one canonical parameter of a layer."""
    return NATIVE_NAMES.get(layer.kind, {}).get(param, ("params", param))


def to_native(model: ir.Model, weights: Mapping[str, np.ndarray]) -> dict[str, dict]:
    """Canonical weights -> Flax variables (fresh device arrays, never aliasing
    the caller's numpy buffers, so they may be donated)."""
    check_weights(model, weights)
    variables: dict[str, dict] = {c: {} for c in COLLECTIONS}
    for layer in model.layers:
        for w in layer.weights:
            collection, name = native_slot(layer, w.name)
            value = np.asarray(weights[layer.weight_key(w.name)], dtype=np.float32)
            variables[collection].setdefault(layer.name, {})[name] = jnp.array(value, copy=True)
    return variables


def _fetch(variables: Mapping[str, Any], collection: str, layer: str, name: str) -> np.ndarray:
    try:
        value = variables[collection][layer][name]
    except KeyError:
        raise ValueError(f"Flax variables have no {collection}/{layer}/{name}") from None
    return np.array(jax.device_get(value), dtype=np.float32)


def from_native(model: ir.Model, native: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Flax variables -> canonical weights (float32 numpy, Keras layouts)."""
    out = {}
    for layer in model.layers:
        for w in layer.weights:
            collection, name = native_slot(layer, w.name)
            out[layer.weight_key(w.name)] = _fetch(native, collection, layer.name, name)
    return out


def params_to_canonical(model: ir.Model, params: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """A "params" tree (for instance its gradient) -> canonical arrays of the
    trainable weights only."""
    out = {}
    for layer in model.layers:
        for w in layer.weights:
            collection, name = native_slot(layer, w.name)
            if w.trainable and collection == "params":
                out[layer.weight_key(w.name)] = _fetch({"params": params}, "params", layer.name, name)
    return out


def count(native: Mapping[str, Any]) -> int:
    """Number of scalars in a variables tree (every collection)."""
    return sum(int(np.prod(np.shape(leaf))) for leaf in jax.tree_util.tree_leaves(native))
