"""Models, weights and inputs shared by the tests that run both backends
(test_golden_backends.py) and Keras (test_keras_outputs.py).

A case is one model: every model of specs/ ("<file>_<model>") and small specs
that together exercise every layer option. Weights are the canonical initial
weights with every zero and one perturbed, so biases, BatchNorm statistics and
LSTM gates all matter.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

import specc
from specc.weights import init_weights

SPECS = Path(__file__).resolve().parents[1] / "specs"

# Small specs that together cover every layer option of the catalogue.
CASES = {
    "conv_options": """
model m {
    input [3, 11, 9]
    Conv2D(4, kernel=[3, 2], stride=2, padding=same, activation=relu)
    Conv2D(5, kernel=3, dilation=2, padding=same, bias=false)
    Conv2D(3, kernel=[2, 3], padding=[1, 2], activation=elu)
    Conv2D(2, kernel=2, stride=[2, 1], padding=valid, activation=gelu)
    Flatten()
}""",
    "conv_transpose": """
model m {
    input [3, 5, 4]
    ConvTranspose2D(4, kernel=3, stride=2, padding=same, activation=relu)
    ConvTranspose2D(2, kernel=[2, 3], stride=2, padding=valid)
    ConvTranspose2D(3, kernel=1, stride=2, padding=valid, activation=tanh)
    ConvTranspose2D(2, kernel=4, stride=[2, 3], padding=same, bias=false)
}""",
    "pools": """
model m {
    input [2, 9, 7]
    MaxPool(3, stride=2, padding=same)
    AvgPool(2, stride=1, padding=same)
    AvgPool([3, 2], padding=1)
    MaxPool(2, padding=[1, 0])
    GlobalAvgPool()
}""",
    "batch_norm": """
model m {
    input [3, 6, 5]
    BatchNorm(momentum=0.9, epsilon=0.001)
    Conv2D(4, kernel=3)
    Flatten()
    Dense(6)
    BatchNorm()
    Reshape([2, 3])
    BatchNorm(epsilon=0.01)
}""",
    "recurrent": """
model m {
    input [6, 5]
    LSTM(4, return_sequences=true)
    GRU(3, return_sequences=true)
    LSTM(3, activation=relu)
    Dense(2, activation=sigmoid)
}""",
    "gru_last": """
model m {
    input [7, 3]
    GRU(5)
    Dense(4, activation=softmax)
}""",
    "embedding": """
model m {
    input [6] int
    Embedding(11, 4)
    GRU(3, return_sequences=true)
    Flatten()
    Dense(3, activation=softmax)
}""",
    "activations": """
model m {
    input [2, 3, 4]
    ReLU()
    Dense(5, activation=silu)
    LeakyReLU(0.2)
    Tanh()
    GELU()
    ELU()
    SiLU()
    Sigmoid()
    Dropout(0.5)
    Dense(3, activation=leaky_relu)
    Softmax()
}""",
}


def _texts() -> dict[str, tuple[str, str, str]]:
    """case -> (spec text, file name, model name)."""
    texts = {}
    for path in sorted(SPECS.glob("*.spec")):
        text = path.read_text(encoding="utf-8")
        for model in specc.loads(text, filename=str(path)).models:
            texts[f"{path.stem}_{model}"] = (text, str(path), model)
    for name, text in CASES.items():
        texts[name] = (text, f"<{name}>", "m")
    return texts


def _models() -> dict[str, specc.ir.Model]:
    return {case: specc.loads(text, filename=file)[name] for case, (text, file, name) in TEXTS.items()}


TEXTS = _texts()


MODELS = _models()


def perturbed_weights(model, seed: int = 7) -> dict[str, np.ndarray]:
    weights = init_weights(model, seed)
    rng = np.random.default_rng(seed)
    for key, value in weights.items():
        if key.endswith("moving_variance"):
            weights[key] = rng.uniform(0.5, 1.5, value.shape).astype(np.float32)
        elif not np.any(value - np.round(value)):  # zeros and ones: biases, gamma, beta, means
            weights[key] = (value + rng.normal(0, 0.1, value.shape)).astype(np.float32)
    return weights


def sample_input(model, seed: int = 11, batch: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if model.input_dtype == "int32":
        vocab = model.layers[0].attrs["vocab"]
        return rng.integers(0, vocab, size=(batch, *model.input_shape)).astype(np.int32)
    return rng.normal(size=(batch, *model.input_shape)).astype(np.float32)
