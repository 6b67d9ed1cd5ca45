"""What a train block may say: data sets, losses, optimisers (with Keras's
defaults, written out so both backends set every one explicitly), schedules
and metrics. Framework-free; the checker validates against these tables and
fills every default into the IR.
"""

from __future__ import annotations

from .catalogue import REQUIRED

# name -> ordered {argument: default}; the first `positional` arguments may be
# given without a keyword.
Signature = dict[str, object]

DATASETS: dict[str, Signature] = {
    "mnist": {"validation_split": 0.0},
    "npz": {"path": REQUIRED, "validation_split": 0.0},
    "synthetic": {"samples": 1000, "classes": 10, "test_samples": 200, "validation_split": 0.0, "seed": 0,
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

LOSSES = ("cross_entropy", "binary_cross_entropy", "mse", "mae")
METRICS = ("accuracy",)

# The final activation each loss is fused with (trained on logits), and the
# final activations it accepts (linear: the outputs are taken as logits).
FUSED_ACTIVATION = {"cross_entropy": "softmax", "binary_cross_entropy": "sigmoid"}

SETTINGS = ("data", "loss", "optimizer", "batch", "epochs", "metrics", "seed", "schedule", "patience")
REQUIRED_SETTINGS = ("data", "loss")
DEFAULTS = {"optimizer": "adam", "batch": 32, "epochs": 1, "metrics": (), "seed": 0, "schedule": "constant",
            "patience": None}
