"""What a train block may say: data sets, losses, optimisers (with Keras's
defaults, written out so both backends set every one explicitly), schedules
and metrics. Framework-free; the checker binds calls against these tables
(specc.binding, the binder layers use too) and fills every default into the IR.
"""

from __future__ import annotations

from typing import Any, Callable

from .catalogue import REQUIRED, Arg, LayerError, _describe

# name -> ordered {argument: default}; the first `positional` arguments may be
# given without a keyword.
Signature = dict[str, object]

DATASETS: dict[str, Signature] = {
    "mnist": {"validation_split": 0.0},
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

# Positional order: the first argument of each may be written without its key.
POSITIONAL = {"npz": ("path",), "step": ("every", "factor"), "cosine": ("warmup",),
              **{name: ("lr",) for name in OPTIMIZERS}}

# The type of every argument above (a converter below).
ARG_TYPES = {
    "path": "path", "validation_split": "split",
    "samples": "count", "classes": "count", "test_samples": "count", "vocab": "count", "every": "count",
    "seed": "seed", "warmup": "seed",
    "lr": "positive", "epsilon": "positive",
    "momentum": "non_negative", "beta1": "non_negative", "beta2": "non_negative", "rho": "non_negative",
    "weight_decay": "non_negative", "initial_accumulator": "non_negative", "factor": "non_negative",
    "nesterov": "bool",
}


def arguments(name: str, signature: Signature) -> tuple[Arg, ...]:
    """The typed arguments of one data set, optimizer or schedule, for the binder."""
    positional = POSITIONAL.get(name, ())
    return tuple(Arg(key, ARG_TYPES[key], default, key in positional) for key, default in signature.items())


def fill_derived(name: str, args: dict) -> dict:
    """Defaults that depend on other arguments, so the IR holds every value."""
    if name == "synthetic" and args.get("test_samples") is None:
        args["test_samples"] = max(1, args["samples"] // 5)
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


def _path(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise LayerError(f"{name} must be a string in double quotes, got {_describe(value)}",
                         'e.g. npz("data.npz")', name)
    return value


CONVERTERS: dict[str, Callable[[Any, str], Any]] = {
    "path": _path, "split": _split, "count": _count, "seed": _seed, "positive": _positive,
    "non_negative": _non_negative,  # "bool" is the catalogue's
}

TYPE_WORDS = {
    "path": "a string", "split": "a number in [0, 1)", "count": "a positive integer",
    "seed": "a non-negative integer", "positive": "a positive number", "non_negative": "a non-negative number",
}

LOSSES = ("cross_entropy", "binary_cross_entropy", "mse", "mae")
METRICS = ("accuracy",)

# The final activation each loss is fused with (trained on logits), and the
# final activations it accepts (linear: the outputs are taken as logits).
FUSED_ACTIVATION = {"cross_entropy": "softmax", "binary_cross_entropy": "sigmoid"}

SETTINGS = ("data", "loss", "optimizer", "batch", "epochs", "metrics", "seed", "schedule", "patience")
REQUIRED_SETTINGS = ("data", "loss")
DEFAULTS = {"optimizer": "adam", "batch": 32, "epochs": 1, "metrics": (), "seed": 0, "schedule": "constant",
            "patience": None}
