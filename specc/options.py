"""What a train block may say: data sets, losses, optimisers (with Keras's
defaults, written out so both backends set every one explicitly), schedules
and metrics. Framework-free; the checker binds calls against these tables
(specc.binding, the binder layers use too) and fills every default into the IR.
"""

from __future__ import annotations

from typing import Any, Callable

from .catalogue import MAX_SIZE, MAX_SIZE_TEXT, REQUIRED, SIZE_HINT, Arg, LayerError, Symbol, _describe

# name -> ordered {argument: default}; the first `positional` arguments may be
# given without a keyword.
Signature = dict[str, object]

DATASETS: dict[str, Signature] = {
    # range None: pixels in [0, 1], left out of the IR (fill_derived) so version 1 blocks read as before.
    "mnist": {"validation_split": 0.0, "range": None},
    "npz": {"path": REQUIRED, "validation_split": 0.0},
    # test_samples None: max(1, samples // 5), filled in by fill_derived().
    "synthetic": {"samples": 1000, "classes": 10, "test_samples": None, "validation_split": 0.0, "seed": 0,
                  "vocab": 10},
}

OPTIMIZERS: dict[str, Signature] = {
    "sgd": {"lr": 0.01, "momentum": 0.0, "nesterov": False},
    "adam": {"lr": 0.001, "beta1": 0.9, "beta2": 0.999, "epsilon": 1e-7},
    "adamw": {"lr": 0.001, "beta1": 0.9, "beta2": 0.999, "epsilon": 1e-7, "weight_decay": 0.004},
    "rmsprop": {"lr": 0.001, "rho": 0.9, "momentum": 0.0, "epsilon": 1e-7},
    "adagrad": {"lr": 0.001, "initial_accumulator": 0.1, "epsilon": 1e-7},
}

SCHEDULES: dict[str, Signature] = {
    "constant": {},
    "cosine": {"warmup": 0},
    "step": {"every": REQUIRED, "factor": 0.1},
}

# Multi-model recipes (version 2); without `recipe`, a train block is supervised.
RECIPES: dict[str, Signature] = {
    "gan": {"discriminator": REQUIRED, "latent": REQUIRED},  # the train block's model is the generator
    "autoencoder": {"noise": 0.0},  # std of the Gaussian input noise; the target is the clean input
}

# Positional order: the first argument of each may be written without its key.
POSITIONAL = {"npz": ("path",), "step": ("every", "factor"), "cosine": ("warmup",),
              **{name: ("lr",) for name in OPTIMIZERS}, "gan": ("discriminator", "latent"), "autoencoder": ("noise",)}

# The type of every argument above (a converter below).
ARG_TYPES = {
    "path": "path", "validation_split": "split",
    "samples": "count", "classes": "count", "test_samples": "count", "vocab": "count", "every": "count",
    "seed": "seed", "warmup": "seed",
    "lr": "positive", "epsilon": "positive",
    "momentum": "non_negative", "beta1": "non_negative", "beta2": "non_negative", "rho": "non_negative",
    "weight_decay": "non_negative", "initial_accumulator": "non_negative", "factor": "non_negative",
    "nesterov": "bool",
    "range": "range", "discriminator": "model", "latent": "count", "noise": "non_negative",
}


def arguments(name: str, signature: Signature) -> tuple[Arg, ...]:
    """The typed arguments of one data set, optimizer or schedule, for the binder."""
    positional = POSITIONAL.get(name, ())
    return tuple(Arg(key, ARG_TYPES[key], default, key in positional) for key, default in signature.items())


def fill_derived(name: str, args: dict) -> dict:
    """Defaults that depend on other arguments, so the IR holds every value."""
    if name == "synthetic" and args.get("test_samples") is None:
        args["test_samples"] = max(1, args["samples"] // 5)
    if name == "mnist" and args.get("range") is None:
        args.pop("range", None)  # the default, [0, 1]
    return args


# ---------------------------------------------------------------- converters


def _number(value: Any, name: str) -> float | int:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise LayerError(f"{name} must be a number, got {_describe(value)}", None, name)
    return value


def _integer(value: Any, name: str) -> int:
    if isinstance(_number(value, name), float) and not value.is_integer():
        raise LayerError(f"{name} must be an integer, got {_describe(value)}", None, name)
    return int(value)


def _count(value: Any, name: str) -> int:
    if _integer(value, name) <= 0:
        raise LayerError(f"{name} must be positive, got {_describe(value)}", None, name)
    if value > MAX_SIZE:  # samples, classes, a latent size: specc's size limit (specc.catalogue.MAX_SIZE)
        raise LayerError(f"{name} must be at most {MAX_SIZE_TEXT}, got {_describe(value)}", SIZE_HINT, name)
    return int(value)


def _seed(value: Any, name: str) -> int:
    if _integer(value, name) < 0:
        raise LayerError(f"{name} must not be negative, got {_describe(value)}", None, name)
    return int(value)


def _positive(value: Any, name: str) -> float:
    if _number(value, name) <= 0:
        raise LayerError(f"{name} must be positive, got {_describe(value)}", None, name)
    return float(value)


def _non_negative(value: Any, name: str) -> float:
    if _number(value, name) < 0:
        raise LayerError(f"{name} must not be negative, got {_describe(value)}", None, name)
    return float(value)


def _split(value: Any, name: str) -> float:
    if not 0.0 <= _number(value, name) < 1.0:
        raise LayerError(f"{name} must be in [0, 1), got {_describe(value)}",
                         "it is the fraction of the training data held out, e.g. validation_split=0.2", name)
    return float(value)


def _range(value: Any, name: str) -> list[float]:
    hint = "e.g. range=[-1, 1] for a tanh generator; the default is [0, 1]"
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise LayerError(f"{name} must be two numbers [low, high], got {_describe(value)}", hint, name)
    low, high = (float(_number(v, name)) for v in value)
    if not low < high:
        raise LayerError(f"{name} must be [low, high] with low < high, got {_describe(value)}", hint, name)
    return [low, high]


def _model(value: Any, name: str) -> str:
    """A model of the file, named by a bare word (checked against the file's
    models by the train block checker)."""
    if not isinstance(value, Symbol):
        raise LayerError(f"{name} must name a model of this file, got {_describe(value)}",
                         "write the model's name as a bare word: gan(discriminator, latent=100)", name)
    return value.name


def _path(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise LayerError(f"{name} must be a string in double quotes, got {_describe(value)}",
                         'e.g. npz("data.npz")', name)
    return value


CONVERTERS: dict[str, Callable[[Any, str], Any]] = {
    "path": _path, "split": _split, "count": _count, "seed": _seed, "positive": _positive,
    "non_negative": _non_negative, "range": _range, "model": _model,  # "bool" is the catalogue's
}

TYPE_WORDS = {
    "path": "a string", "split": "a number in [0, 1)", "count": "a positive integer",
    "seed": "a non-negative integer", "positive": "a positive number", "non_negative": "a non-negative number",
    "range": "two numbers [low, high]", "model": "the name of a model",
}

LOSSES = ("cross_entropy", "binary_cross_entropy", "mse", "mae")
METRICS = ("accuracy",)

# The final activation each loss is fused with (trained on logits), and the
# final activations it accepts (linear: the outputs are taken as logits).
FUSED_ACTIVATION = {"cross_entropy": "softmax", "binary_cross_entropy": "sigmoid"}

SETTINGS = ("data", "loss", "optimizer", "batch", "epochs", "metrics", "seed", "schedule", "patience", "recipe")
REQUIRED_SETTINGS = ("data", "loss")
# A GAN's loss is implied: binary cross-entropy on D's output (real 1, fake 0).
RECIPE_LOSS = {"gan": "binary_cross_entropy"}
AUTOENCODER_LOSSES = ("binary_cross_entropy", "mse", "mae")
DEFAULTS = {"optimizer": "adam", "batch": 32, "epochs": 1, "metrics": (), "seed": 0, "schedule": "constant",
            "patience": None}


# ---------------------------------------------------------------- a train block read back


def _call_problem(kind: str, call: Any, table: dict[str, Signature]) -> str | None:
    if call.name not in table:
        return f"unknown {kind} {call.name!r}"
    signature = table[call.name]
    for key, value in call.args.items():
        if key not in signature:
            return f"{call.name}() has no argument {key!r}"
        kind_of = ARG_TYPES[key]
        if value is None and signature[key] is None:
            continue  # a default left for fill_derived
        try:
            if kind_of == "bool" or kind_of == "model":
                if not isinstance(value, bool if kind_of == "bool" else str):
                    return f"{call.name}({key}={value!r}) is not {'true or false' if kind_of == 'bool' else 'a name'}"
            else:
                CONVERTERS[kind_of](value, key)
        except LayerError as err:
            return f"{call.name}(): {err.message}"
    missing = [key for key, default in signature.items() if default is REQUIRED and key not in call.args]
    return f"{call.name}() lacks {missing[0]}" if missing else None


def saved_train_problem(train: Any) -> str | None:
    """What a train block read back from a run directory holds that the
    checker never lets through (the file was edited or damaged), or None.
    The same tables and ranges as a spec's train block."""
    for key in ("batch", "epochs", "seed", "patience"):
        value = getattr(train, key)
        if key == "patience" and value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < (0 if key == "seed" else 1):
            return f"{key} is {value!r}, not a {'non-negative' if key == 'seed' else 'positive'} integer"
    if train.loss not in LOSSES:
        return f"unknown loss {train.loss!r}"
    if not isinstance(train.metrics, tuple) or any(m not in METRICS for m in train.metrics):
        return f"unknown metrics {list(train.metrics)!r}"
    calls = [("data set", train.data, DATASETS), ("optimizer", train.optimizer, OPTIMIZERS),
             ("schedule", train.schedule, SCHEDULES)]
    if train.recipe is not None:
        calls.append(("recipe", train.recipe, RECIPES))
    for kind, call, table in calls:
        if not isinstance(call.name, str) or not hasattr(call.args, "items"):
            return f"a malformed {kind}"
        problem = _call_problem(kind, call, table)
        if problem:
            return problem
    return None
