"""Models, weights and inputs shared by the tests that run both backends
(test_golden_backends.py) and Keras (test_keras_outputs.py).

A case is one model: every model of specs/ and of the graph specs
tests/specs/graphs/ ("<file>_<model>": nested blocks, repeat inside blocks,
residual with and without a shortcut, concats of three branches, an import,
and the oracle specs of test_graph_oracle.py), small specs that together
exercise every layer option, and graphs built directly as IR with `Graph`
(`GRAPHS`, "graph_*": residual blocks with identity and projection shortcuts,
repeated and nested blocks, concats on every axis). Weights are the canonical
initial weights with every zero and one perturbed, so biases, BatchNorm
statistics and LSTM gates all matter.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

import specc
from specc.catalogue import LAYERS, make_layer
from specc.ir import INPUT, Model
from specc.weights import init_weights

SPECS = Path(__file__).resolve().parents[1] / "specs"
GRAPH_SPECS = Path(__file__).resolve().parent / "specs" / "graphs"

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


# Too large for CPU parity runs (224x224 ResNet-50); benchmarks/forward_resnet50.py runs it.
# graph_lib.spec is a library: graph_import.spec imports it, and its models are cases there.
SKIPPED_SPECS = {"resnet50", "graph_lib"}


def _texts() -> dict[str, tuple[str, str, str]]:
    """case -> (spec text, file name, model name)."""
    texts = {}
    for path in sorted(SPECS.glob("*.spec")) + sorted(GRAPH_SPECS.glob("*.spec")):
        if path.stem in SKIPPED_SPECS:
            continue
        text = path.read_text(encoding="utf-8")
        for model in specc.loads(text, filename=str(path)).models:
            texts[f"{path.stem}_{model}"] = (text, str(path), model)
    for name, text in CASES.items():
        texts[name] = (text, f"<{name}>", "m")
    return texts


def _models() -> dict[str, specc.ir.Model]:
    return {case: specc.loads(text, filename=file)[name] for case, (text, file, name) in TEXTS.items()}


# ---------------------------------------------------------------- graphs built as IR


class Graph:
    """Builds an IR graph node by node with make_layer. `g(kind, *inputs,
    prefix=..., **args)` adds a node reading `inputs` (node names; default:
    the node added last) and returns its name, numbered per kind within its
    block path as the front end names them: "stage_1/basic_2/conv2d_1"."""

    def __init__(self, input_shape, input_dtype: str = "float32"):
        self.input_shape, self.input_dtype = tuple(input_shape), input_dtype
        self.shapes = {INPUT: self.input_shape}
        self.layers: list = []
        self.counts: dict[str, int] = {}
        self.last = INPUT

    def __call__(self, kind: str, *inputs: str, prefix: str = "", **args) -> str:
        inputs = inputs or (self.last,)
        snake = prefix + LAYERS[kind].snake
        self.counts[snake] = self.counts.get(snake, 0) + 1
        name = f"{snake}_{self.counts[snake]}"
        shapes = [self.shapes[i] for i in inputs]
        layer = make_layer(kind, name, shapes if LAYERS[kind].merge else shapes[0], inputs=inputs, **args)
        self.layers.append(layer)
        self.shapes[name], self.last = layer.output_shape, name
        return name

    def model(self, name: str = "m") -> Model:
        return Model(name, self.input_shape, tuple(self.layers), input_dtype=self.input_dtype)


def basic_block(g: Graph, x: str, prefix: str, filters: int, stride: int = 1) -> str:
    """ResNet's basic block: conv-BN-relu-conv-BN plus the shortcut (identity,
    or a strided 1x1 conv + BN projection where the shape changes), then relu."""
    g("Conv2D", x, prefix=prefix, filters=filters, kernel=3, stride=stride, padding="same", bias=False)
    g("BatchNorm", prefix=prefix)
    g("ReLU", prefix=prefix)
    g("Conv2D", prefix=prefix, filters=filters, kernel=3, padding="same", bias=False)
    y = g("BatchNorm", prefix=prefix, momentum=0.9)
    shortcut = x
    if stride != 1 or g.shapes[x][0] != filters:
        g("Conv2D", x, prefix=prefix, filters=filters, kernel=1, stride=stride, bias=False)
        shortcut = g("BatchNorm", prefix=prefix)
    g("Add", y, shortcut, prefix=prefix)
    return g("ReLU", prefix=prefix)


def graph_resnet() -> Model:
    """A stem, then two stages of two basic blocks each (a block repeated
    inside a stage: nested names); stage 2 starts with a strided projection."""
    g = Graph((3, 10, 9))
    g("Conv2D", filters=6, kernel=3, padding="same", bias=False)
    g("BatchNorm")
    x = g("ReLU")
    for stage, (filters, stride) in enumerate(((6, 1), (8, 2)), start=1):
        for block in (1, 2):
            x = basic_block(g, x, f"stage_{stage}/basic_{block}/", filters, stride if block == 1 else 1)
    g("GlobalAvgPool")
    g("Dense", units=5, activation="softmax")
    return g.model("resnet")


def graph_inception() -> Model:
    """Concat of three branches with different channel counts on images; a
    residual that reads the model input itself (channels-first) next to a conv
    branch (NHWC inside Flax); a three-input Add; Flatten and Dense after it."""
    g = Graph((4, 7, 6))
    a = g("Conv2D", INPUT, prefix="mixed_1/branch_1/", filters=3, kernel=1, activation="relu")
    g("Conv2D", INPUT, prefix="mixed_1/branch_2/", filters=2, kernel=1, activation="relu")
    b = g("Conv2D", prefix="mixed_1/branch_2/", filters=5, kernel=3, padding="same")
    g("MaxPool", INPUT, prefix="mixed_1/branch_3/", size=3, stride=1, padding="same")
    c = g("Conv2D", prefix="mixed_1/branch_3/", filters=4, kernel=1, activation="tanh")
    mixed = g("Concat", a, b, c, prefix="mixed_1/")
    g("Conv2D", mixed, prefix="residual_1/", filters=4, kernel=3, padding="same", activation="relu")
    r = g("Add", g.last, INPUT, prefix="residual_1/")
    three = g("Add", r, INPUT, c)
    g("Conv2D", three, filters=3, kernel=2, stride=2, padding="same")
    g("Flatten")
    g("Dense", units=4, activation="sigmoid")
    return g.model("inception")


def graph_image_axes() -> Model:
    """Concats along H and along W (axis 1 and -1 of [C, H, W]); a softmax
    layer after a merge; the output is a merge itself."""
    g = Graph((2, 5, 4))
    a = g("Conv2D", filters=3, kernel=3, padding="same", activation="elu")
    b = g("Conv2D", INPUT, filters=3, kernel=[3, 1], padding=[1, 0])
    g("Concat", a, b, axis=1)  # [3, 10, 4]
    g("AvgPool", size=[2, 1])  # [3, 5, 4]
    s = g("Softmax", g("Add", g.last, a))
    g("Concat", s, a, b, axis=-1)  # [3, 5, 12]
    return g.model("image_axes")


def graph_vectors() -> Model:
    """Concat of [F] vectors (axis -1), a residual on vectors with BatchNorm,
    Dropout after a merge."""
    g = Graph((6,))
    a = g("Dense", INPUT, units=5, activation="relu")
    b = g("Dense", INPUT, units=3)
    c = g("Concat", a, b, INPUT, axis=-1)  # [14]
    g("Dense", c, units=14, activation="tanh")
    g("BatchNorm")
    g("Dropout", g("Add", g.last, c), rate=0.3)
    g("Dense", units=3, activation="softmax")
    return g.model("vectors")


def graph_sequences() -> Model:
    """Concat of [T, F] sequences along features (axis 1) and along time (axis 0)."""
    g = Graph((5, 3))
    a = g("LSTM", INPUT, units=4, return_sequences=True)
    b = g("GRU", INPUT, units=2, return_sequences=True)
    c = g("Dense", INPUT, units=3, activation="relu")
    f = g("Concat", a, b, c, axis=1)  # [5, 9]
    g("Dense", f, units=9)
    t = g("Concat", g.last, f, axis=0)  # [10, 9]
    g("LSTM", t, units=3)
    g("Dense", units=2)
    return g.model("sequences")


def graph_small() -> Model:
    """A few parameters only (for finite differences): a residual on images
    whose shortcut is a 1x1 conv, concatenated with the model input, then
    BatchNorm, a pool and Dense on the merged [C, H, W] image (its last axis)."""
    g = Graph((2, 4, 3))
    a = g("Conv2D", filters=2, kernel=3, padding="same", activation="tanh")
    b = g("Conv2D", INPUT, filters=2, kernel=1)
    g("Concat", g("Add", a, b), INPUT, axis=0)  # [4, 4, 3]
    g("BatchNorm")
    g("MaxPool", size=2, stride=1, padding="same")
    g("Dense", units=2)  # [4, 4, 2]
    return g.model("small")


GRAPHS = {f"graph_{f.__name__[6:]}": f() for f in (graph_resnet, graph_inception, graph_image_axes, graph_vectors,
                                                     graph_sequences)}

TEXTS = _texts()


assert not set(TEXTS) & set(GRAPHS), "a spec case and a built graph share a name"
MODELS = {**_models(), **GRAPHS}
# file name -> spec text of every case (the in-line CASES are no files on disk)
SOURCES = {file: text for text, file, _ in TEXTS.values()}


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
