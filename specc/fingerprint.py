"""A checked model's fingerprint, and what changed between two of them.

A run directory keeps, for each model its recipe trains (a GAN's two), the
model's canonical IR (what `specc ir` writes for it, less where each node was
written: file, line and column) and its SHA-256 (`run.json` and every
checkpoint's state, under "models"). Moving the spec, re-formatting it,
adding comments or writing the same model with other `let`s or blocks leaves
the fingerprint as it was; any change to the model itself (a shape, an
activation, a stride, a padding, a dropout rate, an epsilon, the order of
the layers, a name) changes it, and `--resume` refuses the run, naming the
first difference (`conv2d_1: stride [1, 1] -> [2, 2]`).

Framework-free, like the rest of the front end.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from .ir import Model

SPAN_KEYS = ("file", "line", "column")  # where a node was written: not part of the model


def canonical(model: Model) -> dict:
    """The model's IR as `specc ir` writes it, without source positions."""
    d = model.to_dict()
    d["layers"] = [{k: v for k, v in layer.items() if k not in SPAN_KEYS} for layer in d["layers"]]
    return d


def digest(ir: dict) -> str:
    """sha256 of the canonical JSON (sorted keys, no spaces)."""
    text = json.dumps(ir, sort_keys=True, separators=(",", ":"), allow_nan=True)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def fingerprint(model: Model) -> str:
    return digest(canonical(model))


def record(model: Model) -> dict:
    """What a run directory keeps of one model."""
    ir = canonical(model)
    return {"fingerprint": digest(ir), "ir": ir}


def _shown(value: Any) -> str:
    if value is None:
        return "(none)"
    if isinstance(value, str):
        return value
    return json.dumps(value)


def _layer_word(layer: dict) -> str:
    return f"{layer.get('name')} ({layer.get('kind')})"


def difference(old: Any, new: dict) -> str | None:
    """The first difference between a run's canonical IR `old` and `new`,
    in words, or None when none can be named (`old` is not a model's IR)."""
    if not isinstance(old, dict) or not isinstance(old.get("layers"), list):
        return None
    if old.get("input_shape") != new["input_shape"]:
        return f"input: shape {_shown(old.get('input_shape'))} -> {_shown(new['input_shape'])}"
    if old.get("input_dtype") != new["input_dtype"]:
        return f"input: type {_shown(old.get('input_dtype'))} -> {_shown(new['input_dtype'])}"
    before, after = old["layers"], new["layers"]
    if not all(isinstance(layer, dict) for layer in before):
        return None
    old_names = [layer.get("name") for layer in before]
    new_names = [layer["name"] for layer in after]
    for i, (a, b) in enumerate(zip(before, after)):
        if a.get("name") != b["name"]:
            if b["name"] not in old_names:
                return f"{_layer_word(b)} is new, where the run had {_layer_word(a)}"
            if a.get("name") not in new_names:
                return f"{_layer_word(a)} is gone, where the spec now has {_layer_word(b)}"
            return f"the layer order: {_layer_word(a)} came before {_layer_word(b)}, now after it"
        change = _layer_difference(a, b)
        if change:
            return f"{b['name']}: {change}"
    if len(before) > len(after):
        return f"{_layer_word(before[len(after)])} is gone (the run's model has {len(before)} layers, now {len(after)})"
    if len(after) > len(before):
        return f"{_layer_word(after[len(before)])} is new (the run's model has {len(before)} layers, now {len(after)})"
    return None


def _layer_difference(a: dict, b: dict) -> str | None:
    if a.get("kind") != b["kind"]:
        return f"kind {_shown(a.get('kind'))} -> {b['kind']}"
    if a.get("inputs") != b["inputs"]:
        return f"inputs {_shown(a.get('inputs'))} -> {_shown(b['inputs'])}"
    old_attrs = a.get("attrs") if isinstance(a.get("attrs"), dict) else {}
    for key in [*old_attrs, *(k for k in b["attrs"] if k not in old_attrs)]:
        if old_attrs.get(key) != b["attrs"].get(key):
            return f"{key} {_shown(old_attrs.get(key))} -> {_shown(b['attrs'].get(key))}"
    for key in ("input_shapes", "input_shape", "output_shape", "weights"):
        if a.get(key) != b[key]:
            if key == "weights":
                return _weights_difference(a.get(key), b[key])
            return f"{key.replace('_', ' ')} {_shown(a.get(key))} -> {_shown(b[key])}"
    return None


def _weights_difference(old: Any, new: list) -> str:
    old = old if isinstance(old, list) else []
    for w_old, w_new in zip(old, new):
        if w_old != w_new:
            name = w_new["name"]
            for key in ("name", "shape", "trainable", "init"):
                if not isinstance(w_old, dict) or w_old.get(key) != w_new[key]:
                    return f"weight {name}: {key} {_shown(w_old.get(key) if isinstance(w_old, dict) else None)} " \
                           f"-> {_shown(w_new[key])}"
    return f"weights {_shown([w.get('name') for w in old if isinstance(w, dict)])} -> " \
           f"{_shown([w['name'] for w in new])}"
