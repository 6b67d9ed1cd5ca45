"""The IR: frozen, JSON-able descriptions of checked models and train blocks.

Nothing here knows about lark or any framework. Every value a backend needs is
resolved: shapes are channels-first tuples without the batch axis, kernels,
strides and dilations are `(h, w)` integer tuples, padding is explicit
`((low, high), (low, high))`, BatchNorm momentum is in the Keras convention,
activations are names. `to_json`/`from_json` round-trip losslessly: attribute
values are only ints, floats, bools, strings, None and (nested) tuples, and
JSON lists are read back as tuples.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from math import prod
from types import MappingProxyType
from typing import Any, Mapping

Shape = tuple[int, ...]

# The name by which graph nodes refer to the model's input ("Connected to"
# `input`); `input` is a keyword of the language, so no layer can take it.
INPUT = "input"
IR_VERSION = 2  # 2: models are DAGs (nodes have inputs, input_shapes and spans)
MERGE_KINDS = ("Add", "Concat")


def _freeze(value: Any) -> Any:
    """JSON lists back to tuples, dicts to read-only mappings (recursively)."""
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    if isinstance(value, Mapping):
        return MappingProxyType({k: _freeze(v) for k, v in value.items()})
    return value


class _Immutable:
    """IR values never change, so a copy is the value itself (copy.deepcopy
    would otherwise fail on the read-only mappings)."""

    def __copy__(self):
        return self

    def __deepcopy__(self, memo):
        return self


def _plain(value: Any) -> Any:
    """The JSON-ready form of a frozen value."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value


@dataclass(frozen=True)
class Weight(_Immutable):
    """One canonical parameter array of a layer (Keras layout, float32)."""

    name: str  # the param part of the key "<layer>/<param>"
    shape: Shape
    trainable: bool = True
    init: str = "zeros"  # glorot_uniform, orthogonal, zeros, ones, lstm_bias, uniform_0.05

    @property
    def size(self) -> int:
        return prod(self.shape)

    def to_dict(self) -> dict:
        return {"name": self.name, "shape": list(self.shape), "trainable": self.trainable, "init": self.init}

    @classmethod
    def from_dict(cls, d: Mapping) -> "Weight":
        return cls(d["name"], tuple(d["shape"]), bool(d["trainable"]), d["init"])


@dataclass(frozen=True)
class Layer(_Immutable):
    """One node of a model's graph.

    `inputs` names the nodes it reads (`INPUT` for the model input), in order;
    `input_shapes` holds their shapes, and `input_shape` is the first of them
    (the only one for every kind but the merges, Add and Concat). `file`,
    `line` and `column` are where the node was written (imports make the file
    matter); a node made by a block call points at the call's layer inside
    the block. A layer built without `inputs` reads the layer before it
    (`Model` fills that in), so sequential code keeps working.
    """

    name: str
    kind: str  # catalogue spelling: "Dense", "Conv2D", ..., "Add", "Concat"
    attrs: Mapping[str, Any]
    input_shape: Shape
    output_shape: Shape
    weights: tuple[Weight, ...] = ()
    line: int | None = None  # where the layer was written, for runtime messages
    inputs: tuple[str, ...] = ()
    input_shapes: tuple[Shape, ...] = ()
    file: str | None = None
    column: int | None = None

    def __post_init__(self):
        object.__setattr__(self, "attrs", _freeze(dict(self.attrs)))
        object.__setattr__(self, "input_shape", tuple(self.input_shape))
        object.__setattr__(self, "output_shape", tuple(self.output_shape))
        object.__setattr__(self, "weights", tuple(self.weights))
        object.__setattr__(self, "inputs", tuple(self.inputs))
        shapes = tuple(tuple(s) for s in self.input_shapes) or (self.input_shape,)
        object.__setattr__(self, "input_shapes", shapes)

    @property
    def params(self) -> int:
        """Parameter count exactly as Keras's count_params() reports it."""
        return sum(w.size for w in self.weights)

    @property
    def trainable_params(self) -> int:
        return sum(w.size for w in self.weights if w.trainable)

    @property
    def non_trainable_params(self) -> int:
        return self.params - self.trainable_params

    @property
    def is_merge(self) -> bool:
        return self.kind in MERGE_KINDS

    def weight_key(self, param: str) -> str:
        return f"{self.name}/{param}"

    def replace(self, **changes) -> "Layer":
        from dataclasses import replace

        return replace(self, **changes)

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "kind": self.kind,
            "inputs": list(self.inputs),
            "attrs": _plain(self.attrs),
            "input_shape": list(self.input_shape),
            "input_shapes": [list(s) for s in self.input_shapes],
            "output_shape": list(self.output_shape),
            "weights": [w.to_dict() for w in self.weights],
            "file": self.file,
            "line": self.line,
            "column": self.column,
        }

    @classmethod
    def from_dict(cls, d: Mapping) -> "Layer":
        """Reads version 2 and version 1 (no inputs, shapes or span) alike."""
        return cls(
            name=d["name"],
            kind=d["kind"],
            attrs=_freeze(d["attrs"]),
            input_shape=tuple(d["input_shape"]),
            output_shape=tuple(d["output_shape"]),
            weights=tuple(Weight.from_dict(w) for w in d["weights"]),
            line=d.get("line"),
            inputs=tuple(d.get("inputs", ())),
            input_shapes=tuple(tuple(s) for s in d.get("input_shapes", ())),
            file=d.get("file"),
            column=d.get("column"),
        )


@dataclass(frozen=True)
class Model(_Immutable):
    name: str
    input_shape: Shape
    layers: tuple[Layer, ...]
    input_dtype: str = "float32"  # "int32" for token inputs (`input [T] int`)

    def __post_init__(self):
        object.__setattr__(self, "input_shape", tuple(self.input_shape))
        object.__setattr__(self, "layers", _connect(tuple(self.layers)))

    @property
    def is_sequential(self) -> bool:
        """Every node reads only the node before it (a plain stack)."""
        previous = INPUT
        for layer in self.layers:
            if layer.inputs != (previous,):
                return False
            previous = layer.name
        return True

    def consumers(self, name: str) -> tuple[Layer, ...]:
        """The nodes that read node `name` (or the model input, `INPUT`)."""
        return tuple(layer for layer in self.layers if name in layer.inputs)

    @property
    def output_shape(self) -> Shape:
        return self.layers[-1].output_shape if self.layers else self.input_shape

    @property
    def params(self) -> int:
        return sum(layer.params for layer in self.layers)

    def final_activation_index(self) -> int | None:
        """The layer whose activation the model applies last: walking back from
        the output node along first inputs, the first one that is not Dropout,
        Flatten or Reshape (they only move values). Fused losses leave this
        layer's softmax/sigmoid out of the train forward."""
        index = {layer.name: i for i, layer in enumerate(self.layers)}
        i = len(self.layers) - 1
        while i >= 0 and self.layers[i].kind in ("Dropout", "Flatten", "Reshape"):
            i = index.get(self.layers[i].inputs[0], -1)
        return i if i >= 0 else None

    @property
    def final_activation(self) -> str:
        """That layer's activation; "linear" where it has none (a recurrent
        layer's `activation` is its cell's, not applied to the output)."""
        i = self.final_activation_index()
        if i is None or self.layers[i].kind in ("LSTM", "GRU") or self.layers[i].is_merge:
            return "linear"
        return self.layers[i].attrs.get("activation", "linear")

    def weight_specs(self) -> dict[str, Weight]:
        """Canonical key -> Weight, in layer order."""
        return {layer.weight_key(w.name): w for layer in self.layers for w in layer.weights}

    def layer(self, name: str) -> Layer:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(name)

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "input_shape": list(self.input_shape),
            "input_dtype": self.input_dtype,
            "layers": [layer.to_dict() for layer in self.layers],
        }

    @classmethod
    def from_dict(cls, d: Mapping) -> "Model":
        return cls(
            name=d["name"],
            input_shape=tuple(d["input_shape"]),
            layers=tuple(Layer.from_dict(x) for x in d["layers"]),
            input_dtype=d.get("input_dtype", "float32"),
        )

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_json(cls, text: str) -> "Model":
        return cls.from_dict(json.loads(text))


def _connect(layers: tuple[Layer, ...]) -> tuple[Layer, ...]:
    """Fill in sequential inputs where a layer has none (version-1 JSON, code
    that builds a stack), and check that the order is topological."""
    seen, previous, out = {INPUT}, INPUT, []
    for layer in layers:
        if not layer.inputs:
            layer = layer.replace(inputs=(previous,))
        missing = [name for name in layer.inputs if name not in seen]
        if missing:
            raise ValueError(f"node {layer.name} reads {missing[0]}, which is not an earlier node of the model")
        if layer.name in seen:
            raise ValueError(f"node name {layer.name} is used twice")
        seen.add(layer.name)
        previous = layer.name
        out.append(layer)
    return tuple(out)


@dataclass(frozen=True)
class Call(_Immutable):
    """A resolved `name(args)` value of a train block: data, optimizer, schedule."""

    name: str
    args: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        object.__setattr__(self, "args", _freeze(dict(self.args)))

    def to_dict(self) -> dict:
        return {"name": self.name, "args": _plain(self.args)}

    @classmethod
    def from_dict(cls, d: Mapping) -> "Call":
        return cls(d["name"], _freeze(d["args"]))


@dataclass(frozen=True)
class Train(_Immutable):
    """A checked train block; every optimiser default is filled in explicitly."""

    model: str
    data: Call
    loss: str
    optimizer: Call
    batch: int = 32
    epochs: int = 1
    metrics: tuple[str, ...] = ()
    seed: int = 0
    schedule: Call = Call("constant")
    patience: int | None = None
    recipe: Call | None = None  # gan(...), autoencoder(...); None: supervised

    def __post_init__(self):
        object.__setattr__(self, "metrics", tuple(self.metrics))

    def replace(self, **changes) -> "Train":
        from dataclasses import replace

        return replace(self, **changes)

    def to_dict(self) -> dict:
        return {
            "model": self.model,
            "data": self.data.to_dict(),
            "loss": self.loss,
            "optimizer": self.optimizer.to_dict(),
            "batch": self.batch,
            "epochs": self.epochs,
            "metrics": list(self.metrics),
            "seed": self.seed,
            "schedule": self.schedule.to_dict(),
            "patience": self.patience,
            # Written only when given, so supervised blocks read as in version 1.
            **({"recipe": self.recipe.to_dict()} if self.recipe is not None else {}),
        }

    @classmethod
    def from_dict(cls, d: Mapping) -> "Train":
        return cls(
            model=d["model"],
            data=Call.from_dict(d["data"]),
            loss=d["loss"],
            optimizer=Call.from_dict(d["optimizer"]),
            batch=d["batch"],
            epochs=d["epochs"],
            metrics=tuple(d["metrics"]),
            seed=d["seed"],
            schedule=Call.from_dict(d["schedule"]),
            patience=d.get("patience"),
            recipe=Call.from_dict(d["recipe"]) if d.get("recipe") is not None else None,
        )

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_json(cls, text: str) -> "Train":
        return cls.from_dict(json.loads(text))


@dataclass(frozen=True)
class Program(_Immutable):
    """Everything one spec file defines: models by name, train blocks by model name."""

    models: Mapping[str, Model]
    trains: Mapping[str, Train]
    filename: str = "<string>"
    constants: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        object.__setattr__(self, "models", MappingProxyType(dict(self.models)))
        object.__setattr__(self, "trains", MappingProxyType(dict(self.trains)))
        object.__setattr__(self, "constants", MappingProxyType(dict(self.constants)))

    def __getitem__(self, name: str) -> Model:
        return self.models[name]

    def __contains__(self, name: str) -> bool:
        return name in self.models

    def __iter__(self):
        return iter(self.models.values())

    def to_dict(self) -> dict:
        return {
            "specc_ir": IR_VERSION,
            "filename": self.filename,
            "constants": _plain(self.constants),
            "models": [m.to_dict() for m in self.models.values()],
            "trains": [t.to_dict() for t in self.trains.values()],
        }

    @classmethod
    def from_dict(cls, d: Mapping) -> "Program":
        models = [Model.from_dict(m) for m in d["models"]]
        trains = [Train.from_dict(t) for t in d["trains"]]
        return cls(
            models={m.name: m for m in models},
            trains={t.model: t for t in trains},
            filename=d.get("filename", "<string>"),
            constants=d.get("constants", {}),
        )

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_json(cls, text: str) -> "Program":
        return cls.from_dict(json.loads(text))
