"""Canonical (Keras-layout) weights <-> native torch parameters, both ways.

Every conversion is a transpose and/or a reordering of gate blocks, so the
round trip canonical -> native -> canonical is bit-identical. Native keys are
the built Net's state_dict keys: "<submodule>.<param>", the submodule named
after the IR layer (see net.module_names).

`RULES` is one explicit table keyed by the catalogue kind: for each canonical
param, the native param(s) it becomes and the two exact mappings.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping

import numpy as np
import torch

from specc.ir import Layer, Model

from .net import module_names


@dataclass(frozen=True)
class Rule:
    canonical: str  # param part of "<layer>/<param>"
    native: tuple[str, ...]  # param names in the torch submodule
    to_native: Callable[[np.ndarray], tuple[np.ndarray, ...]]
    from_native: Callable[..., np.ndarray]


def _same(name: str, native: str | None = None) -> Rule:
    return Rule(name, (native or name,), lambda a: (a,), lambda a: a)


def _transposed(name: str, native: str, axes: tuple[int, ...]) -> Rule:
    inverse = tuple(int(i) for i in np.argsort(axes))
    return Rule(name, (native,), lambda a: (a.transpose(axes),), lambda a: a.transpose(inverse))


def _gru_blocks(a: np.ndarray) -> np.ndarray:
    """Swap the first two gate blocks on the last axis: Keras z, r, h <-> torch r, z, n."""
    z, r, h = np.split(a, 3, axis=-1)
    return np.concatenate([r, z, h], axis=-1)


_KERNEL_DENSE = _transposed("kernel", "weight", (1, 0))  # [in, out] -> [out, in]
_BIAS = _same("bias")

RULES: dict[str, tuple[Rule, ...]] = {
    "Dense": (_KERNEL_DENSE, _BIAS),
    # [kh, kw, in, out] -> [out, in, kh, kw]
    "Conv2D": (_transposed("kernel", "weight", (3, 2, 0, 1)), _BIAS),
    # Keras [kh, kw, out, in] -> torch [in, out, kh, kw] (no flip)
    "ConvTranspose2D": (_transposed("kernel", "weight", (3, 2, 0, 1)), _BIAS),
    "BatchNorm": (
        _same("gamma", "weight"),
        _same("beta", "bias"),
        _same("moving_mean", "running_mean"),
        _same("moving_variance", "running_var"),
    ),
    # Gate order i, f, c, o is torch's i, f, g, o; bias_hh_l0 is a zero buffer.
    "LSTM": (
        _transposed("kernel", "weight_ih_l0", (1, 0)),
        _transposed("recurrent_kernel", "weight_hh_l0", (1, 0)),
        _same("bias", "bias_ih_l0"),
    ),
    # Keras z, r, h (reset_after, bias [2, 3u]: input row, recurrent row) -> torch r, z, n.
    "GRU": (
        Rule("kernel", ("weight_ih_l0",), lambda a: (_gru_blocks(a).T,), lambda w: _gru_blocks(w.T)),
        Rule("recurrent_kernel", ("weight_hh_l0",), lambda a: (_gru_blocks(a).T,), lambda w: _gru_blocks(w.T)),
        Rule("bias", ("bias_ih_l0", "bias_hh_l0"),
             lambda a: (_gru_blocks(a[0]), _gru_blocks(a[1])),
             lambda bi, bh: np.stack([_gru_blocks(bi), _gru_blocks(bh)])),
    ),
    "Embedding": (_same("embeddings", "weight"),),
}


def layer_rules(layer: Layer) -> tuple[Rule, ...]:
    """The rules for the canonical weights this layer actually has (bias=false drops one)."""
    present = {w.name for w in layer.weights}
    rules = tuple(r for r in RULES.get(layer.kind, ()) if r.canonical in present)
    missing = present - {r.canonical for r in rules}
    if missing:
        raise ValueError(f"the torch backend cannot convert {layer.kind} weights {sorted(missing)} ({layer.name})")
    return rules


def _f32(a) -> np.ndarray:
    return np.asarray(a, dtype=np.float32)


def to_native(model: Model, weights: Mapping[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """Canonical weights -> {"<submodule>.<param>": float32 tensor} (the Net's state_dict keys)."""
    native: dict[str, torch.Tensor] = {}
    for layer, mod in zip(model.layers, module_names(model)):
        for rule in layer_rules(layer):
            key = layer.weight_key(rule.canonical)
            if key not in weights:
                raise KeyError(f"weights for model {model.name} lack {key}")
            for name, value in zip(rule.native, rule.to_native(_f32(weights[key]))):
                native[f"{mod}.{name}"] = torch.from_numpy(np.ascontiguousarray(value))
    return native


def _numpy(t) -> np.ndarray:
    if isinstance(t, torch.Tensor):
        t = t.detach().cpu()
        if t.dtype != torch.float32:
            t = t.float()
        return t.numpy()
    return _f32(t)


def from_native(model: Model, native, *, only: set[str] | None = None, partial: bool = False) -> dict[str, np.ndarray]:
    """Native parameters (a Net, or a state_dict-like mapping) -> canonical weights.

    `only` restricts the result to those canonical keys; `partial` skips
    canonical weights whose native sources are absent instead of raising.
    """
    if isinstance(native, torch.nn.Module):
        native = native.state_dict()
    out: dict[str, np.ndarray] = {}
    for layer, mod in zip(model.layers, module_names(model)):
        for rule in layer_rules(layer):
            key = layer.weight_key(rule.canonical)
            if only is not None and key not in only:
                continue
            sources = [f"{mod}.{name}" for name in rule.native]
            if not all(s in native for s in sources):
                if partial:
                    continue
                raise KeyError(f"native parameters lack {', '.join(s for s in sources if s not in native)}")
            value = rule.from_native(*(_numpy(native[s]) for s in sources))
            out[key] = np.ascontiguousarray(value, dtype=np.float32).copy()
    return out
