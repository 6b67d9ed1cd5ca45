"""Shape inference and parameter counts, one table row per rule.

Every expected number below was worked out by hand from the Keras formulas in
the language contract (not recomputed with specc's own code):

    Conv2D valid   H' = floor((H - d*(k-1) - 1) / s) + 1      same   H' = ceil(H / s)
    ConvTranspose2D valid H' = (H-1)*s + k if k >= s else H*s  same   H' = H*s
    Dense  in*units + units          Conv  kh*kw*C*F + F       BatchNorm 4*C (2*C non-trainable)
    LSTM   4*(u*(F+u) + u)           GRU   3*(u*(F+u) + 2*u)   Embedding vocab*dim
"""

from __future__ import annotations

from pathlib import Path

import pytest

import specc
from specc.catalogue import LAYERS

SPECS = Path(__file__).resolve().parent.parent / "specs"


def build(input_line: str, *layers: str) -> specc.ir.Model:
    body = "\n".join(f"    {layer}" for layer in layers)
    return specc.loads(f"model m {{\n    input {input_line}\n{body}\n}}\n", filename="table.spec")["m"]


# (id, input line, layer, output shape, params, non-trainable params)
CASES = [
    # ---------------------------------------------------------------- Dense
    ("dense", "[784]", "Dense(10)", (10,), 7_850, 0),
    ("dense-no-bias", "[784]", "Dense(10, bias=false)", (10,), 7_840, 0),
    ("dense-activation", "[3]", "Dense(1, activation=relu)", (1,), 4, 0),
    ("dense-on-sequence", "[5, 8]", "Dense(3)", (5, 3), 27, 0),
    ("dense-arithmetic", "[100]", "Dense(7*7*128)", (6272,), 633_472, 0),
    # ---------------------------------------------------------------- Conv2D
    ("conv-valid", "[1, 28, 28]", "Conv2D(20, kernel=5)", (20, 24, 24), 520, 0),
    ("conv-same", "[1, 28, 28]", "Conv2D(20, kernel=5, padding=same)", (20, 28, 28), 520, 0),
    ("conv-positional-kernel", "[20, 14, 14]", "Conv2D(50, 5, padding=same)", (50, 14, 14), 25_050, 0),
    ("conv-no-bias", "[1, 28, 28]", "Conv2D(20, kernel=5, bias=false)", (20, 24, 24), 500, 0),
    ("conv-valid-stride2-even", "[3, 32, 32]", "Conv2D(8, kernel=3, stride=2)", (8, 15, 15), 224, 0),
    ("conv-valid-stride2-odd", "[3, 31, 31]", "Conv2D(8, kernel=3, stride=2)", (8, 15, 15), 224, 0),
    ("conv-same-stride2-even", "[3, 32, 32]", "Conv2D(8, kernel=3, stride=2, padding=same)", (8, 16, 16), 224, 0),
    ("conv-same-stride2-odd", "[3, 31, 31]", "Conv2D(8, kernel=3, stride=2, padding=same)", (8, 16, 16), 224, 0),
    ("conv-same-stride2-mixed", "[3, 7, 8]", "Conv2D(8, kernel=3, stride=2, padding=same)", (8, 4, 4), 224, 0),
    ("conv-same-stride3", "[1, 10, 11]", "Conv2D(2, kernel=2, stride=3, padding=same)", (2, 4, 4), 10, 0),
    ("conv-valid-stride-gt-kernel", "[1, 10, 11]", "Conv2D(2, kernel=2, stride=3)", (2, 3, 4), 10, 0),
    ("conv-dilation2-valid", "[1, 28, 28]", "Conv2D(4, kernel=3, dilation=2)", (4, 24, 24), 40, 0),
    ("conv-dilation2-same", "[1, 28, 28]", "Conv2D(4, kernel=3, dilation=2, padding=same)", (4, 28, 28), 40, 0),
    ("conv-dilation-pair", "[1, 20, 20]", "Conv2D(4, kernel=3, dilation=[2, 3])", (4, 16, 14), 40, 0),
    ("conv-explicit-int", "[1, 28, 28]", "Conv2D(4, kernel=5, padding=2)", (4, 28, 28), 104, 0),
    ("conv-explicit-pair", "[1, 28, 28]", "Conv2D(4, kernel=3, padding=[1, 0])", (4, 28, 26), 40, 0),
    ("conv-explicit-stride2", "[1, 7, 7]", "Conv2D(1, kernel=3, stride=2, padding=1)", (1, 4, 4), 10, 0),
    ("conv-rect-kernel", "[2, 10, 12]", "Conv2D(6, kernel=[3, 5])", (6, 8, 8), 186, 0),
    ("conv-rect-stride", "[2, 10, 12]", "Conv2D(6, kernel=[3, 5], stride=[2, 1])", (6, 4, 8), 186, 0),
    ("conv-rect-same", "[2, 9, 12]", "Conv2D(6, kernel=[3, 5], stride=[2, 3], padding=same)", (6, 5, 4), 186, 0),
    ("conv-kernel-equals-input", "[3, 5, 5]", "Conv2D(7, kernel=5)", (7, 1, 1), 532, 0),
    # ---------------------------------------------------------------- ConvTranspose2D
    ("tconv-valid-k-gt-s", "[4, 7, 7]", "ConvTranspose2D(2, kernel=3, stride=2)", (2, 15, 15), 74, 0),
    ("tconv-same-k-gt-s", "[4, 7, 7]", "ConvTranspose2D(2, kernel=3, stride=2, padding=same)", (2, 14, 14), 74, 0),
    ("tconv-valid-k-eq-s", "[4, 7, 7]", "ConvTranspose2D(2, kernel=2, stride=2)", (2, 14, 14), 34, 0),
    ("tconv-same-k-eq-s", "[4, 7, 7]", "ConvTranspose2D(2, kernel=2, stride=2, padding=same)", (2, 14, 14), 34, 0),
    ("tconv-valid-k-lt-s", "[4, 7, 7]", "ConvTranspose2D(2, kernel=2, stride=3)", (2, 21, 21), 34, 0),
    ("tconv-same-k-lt-s", "[4, 7, 7]", "ConvTranspose2D(2, kernel=2, stride=3, padding=same)", (2, 21, 21), 34, 0),
    ("tconv-valid-stride1", "[4, 7, 7]", "ConvTranspose2D(2, kernel=3)", (2, 9, 9), 74, 0),
    ("tconv-same-stride1", "[4, 7, 7]", "ConvTranspose2D(2, kernel=3, padding=same)", (2, 7, 7), 74, 0),
    ("tconv-valid-k4-s2", "[1, 5, 6]", "ConvTranspose2D(3, kernel=4, stride=2)", (3, 12, 14), 51, 0),
    ("tconv-rect", "[4, 7, 7]", "ConvTranspose2D(2, kernel=[3, 2], stride=[2, 3])", (2, 15, 21), 50, 0),
    ("tconv-no-bias", "[4, 7, 7]", "ConvTranspose2D(2, kernel=3, stride=2, bias=false)", (2, 15, 15), 72, 0),
    ("tconv-gan", "[128, 7, 7]", "ConvTranspose2D(64, kernel=3, stride=2, padding=same)", (64, 14, 14), 73_792, 0),
    # ---------------------------------------------------------------- pools
    ("maxpool-2", "[3, 28, 28]", "MaxPool(2)", (3, 14, 14), 0, 0),
    ("maxpool-2-odd", "[3, 27, 27]", "MaxPool(2)", (3, 13, 13), 0, 0),
    ("maxpool-3-stride2", "[3, 28, 28]", "MaxPool(3, stride=2)", (3, 13, 13), 0, 0),
    ("maxpool-3-stride2-odd", "[3, 27, 27]", "MaxPool(3, stride=2)", (3, 13, 13), 0, 0),
    ("maxpool-2-stride1", "[3, 28, 28]", "MaxPool(2, stride=1)", (3, 27, 27), 0, 0),
    ("maxpool-rect", "[1, 12, 12]", "MaxPool([2, 3])", (1, 6, 4), 0, 0),
    ("maxpool-same-odd", "[2, 7, 9]", "MaxPool(2, padding=same)", (2, 4, 5), 0, 0),
    ("maxpool-explicit", "[1, 8, 8]", "MaxPool(3, stride=1, padding=1)", (1, 8, 8), 0, 0),
    ("avgpool-2", "[3, 28, 28]", "AvgPool(2)", (3, 14, 14), 0, 0),
    ("avgpool-same-odd", "[3, 27, 27]", "AvgPool(2, padding=same)", (3, 14, 14), 0, 0),
    ("avgpool-3-stride2-same", "[3, 28, 28]", "AvgPool(3, stride=2, padding=same)", (3, 14, 14), 0, 0),
    ("avgpool-stride-gt-size", "[1, 10, 10]", "AvgPool(2, stride=3)", (1, 3, 3), 0, 0),
    ("avgpool-explicit-pair", "[1, 7, 7]", "AvgPool(2, stride=2, padding=[1, 0])", (1, 4, 3), 0, 0),
    ("global-avg-pool", "[16, 7, 7]", "GlobalAvgPool()", (16,), 0, 0),
    # ---------------------------------------------------------------- BatchNorm
    ("batchnorm-image", "[16, 7, 7]", "BatchNorm()", (16, 7, 7), 64, 32),
    ("batchnorm-vector", "[100]", "BatchNorm()", (100,), 400, 200),
    ("batchnorm-sequence", "[10, 6]", "BatchNorm(momentum=0.9, epsilon=1e-5)", (10, 6), 24, 12),
    ("batchnorm-gan", "[6272]", "BatchNorm()", (6272,), 25_088, 12_544),
    # ---------------------------------------------------------------- recurrent
    ("lstm", "[28, 28]", "LSTM(128)", (128,), 80_384, 0),
    ("lstm-sequences", "[28, 28]", "LSTM(128, return_sequences=true)", (28, 128), 80_384, 0),
    ("lstm-small", "[10, 8]", "LSTM(16, activation=relu)", (16,), 1_600, 0),
    ("gru", "[10, 8]", "GRU(16)", (16,), 1_248, 0),
    ("gru-sequences", "[10, 8]", "GRU(16, return_sequences=true)", (10, 16), 1_248, 0),
    ("gru-mnist", "[28, 28]", "GRU(64)", (64,), 18_048, 0),
    # ---------------------------------------------------------------- Embedding
    ("embedding", "[20] int", "Embedding(1000, 32)", (20, 32), 32_000, 0),
    ("embedding-keywords", "[7] int", "Embedding(vocab=50, dim=3)", (7, 3), 150, 0),
    # ---------------------------------------------------------------- reshaping
    ("flatten-image", "[3, 4, 5]", "Flatten()", (60,), 0, 0),
    ("flatten-vector", "[6]", "Flatten()", (6,), 0, 0),
    ("flatten-sequence", "[28, 28]", "Flatten()", (784,), 0, 0),
    ("reshape", "[784]", "Reshape([1, 28, 28])", (1, 28, 28), 0, 0),
    ("reshape-minus-one-last", "[28]", "Reshape([-1, 7])", (4, 7), 0, 0),
    ("reshape-minus-one-middle", "[3, 4, 7]", "Reshape([2, -1, 7])", (2, 6, 7), 0, 0),
    ("reshape-arithmetic", "[6272]", "Reshape([128, 7, 7])", (128, 7, 7), 0, 0),
    # ---------------------------------------------------------------- regularisation, activations
    ("dropout", "[10]", "Dropout(0.5)", (10,), 0, 0),
    ("dropout-keyword", "[3, 4, 4]", "Dropout(rate=0.25)", (3, 4, 4), 0, 0),
    ("relu", "[10]", "ReLU()", (10,), 0, 0),
    ("sigmoid", "[2, 3]", "Sigmoid()", (2, 3), 0, 0),
    ("tanh", "[1, 4, 4]", "Tanh()", (1, 4, 4), 0, 0),
    ("softmax", "[10]", "Softmax()", (10,), 0, 0),
    ("gelu", "[10]", "GELU()", (10,), 0, 0),
    ("elu", "[10]", "ELU()", (10,), 0, 0),
    ("silu", "[10]", "SiLU()", (10,), 0, 0),
    ("leaky-relu", "[10]", "LeakyReLU(0.2)", (10,), 0, 0),
    ("leaky-relu-default", "[4, 4]", "LeakyReLU()", (4, 4), 0, 0),
]


@pytest.mark.parametrize("input_line, layer, out_shape, params, non_trainable",
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_layer_shape_and_params(input_line, layer, out_shape, params, non_trainable):
    model = build(input_line, layer)
    (only,) = model.layers
    assert only.output_shape == out_shape
    assert only.params == params
    assert only.non_trainable_params == non_trainable
    assert only.trainable_params == params - non_trainable
    assert model.output_shape == out_shape


def test_table_covers_every_catalogue_layer():
    # Merge nodes (Add, Concat) are made by residual and concat forms, not
    # written as layers; the graph tests cover them.
    kinds = {build(c[1], c[2]).layers[0].kind for c in CASES}
    assert kinds == {kind for kind, d in LAYERS.items() if not d.merge}


# ---------------------------------------------------------------- resolved attributes


@pytest.mark.parametrize("input_line, layer, pads", [
    # TF/XLA 'same': total padding (out-1)*s + k - H, the odd pixel goes bottom/right.
    ("[1, 28, 28]", "Conv2D(1, kernel=5, padding=same)", ((2, 2), (2, 2))),
    ("[1, 28, 28]", "Conv2D(1, kernel=4, padding=same)", ((1, 2), (1, 2))),
    ("[1, 28, 28]", "Conv2D(1, kernel=3, stride=2, padding=same)", ((0, 1), (0, 1))),
    ("[1, 27, 27]", "Conv2D(1, kernel=3, stride=2, padding=same)", ((1, 1), (1, 1))),
    ("[1, 28, 28]", "Conv2D(1, kernel=3, dilation=2, padding=same)", ((2, 2), (2, 2))),
    ("[1, 28, 28]", "Conv2D(1, kernel=3)", ((0, 0), (0, 0))),
    ("[1, 28, 28]", "Conv2D(1, kernel=3, padding=[2, 1])", ((2, 2), (1, 1))),
    ("[1, 7, 9]", "MaxPool(2, padding=same)", ((0, 1), (0, 1))),
    ("[1, 8, 8]", "MaxPool(2, padding=same)", ((0, 0), (0, 0))),
])
def test_padding_resolved_to_explicit_pairs(input_line, layer, pads):
    assert build(input_line, layer).layers[0].attrs["padding"] == pads


@pytest.mark.parametrize("layer, attrs", [
    ("Conv2D(4, kernel=[3, 5], stride=2, dilation=[1, 2])", {"kernel": (3, 5), "stride": (2, 2), "dilation": (1, 2)}),
    ("MaxPool(3)", {"size": (3, 3), "stride": (3, 3)}),
    ("AvgPool([2, 3], stride=[1, 2])", {"size": (2, 3), "stride": (1, 2)}),
    ("Conv2D(4, 3, activation=relu)", {"activation": "relu", "bias": True}),
    ("Conv2D(4, 3)", {"activation": "linear"}),
    ("LeakyReLU()", {"activation": "leaky_relu", "alpha": 0.01}),
    ("LeakyReLU(alpha=0.3)", {"alpha": 0.3}),
    ("BatchNorm()", {"momentum": 0.99, "epsilon": 1e-3, "axis": 0}),
])
def test_attributes_resolved(layer, attrs):
    got = build("[2, 16, 16]", layer).layers[0].attrs
    for key, value in attrs.items():
        assert got[key] == value, key


@pytest.mark.parametrize("input_line, axis", [("[16, 7, 7]", 0), ("[100]", 0), ("[10, 6]", 1)])
def test_batchnorm_normalises_channels_or_features(input_line, axis):
    assert build(input_line, "BatchNorm()").layers[0].attrs["axis"] == axis


def test_transposed_conv_kernel_layout_is_keras():
    layer = build("[4, 7, 7]", "ConvTranspose2D(2, kernel=[3, 5], stride=2)").layers[0]
    assert {w.name: w.shape for w in layer.weights} == {"kernel": (3, 5, 2, 4), "bias": (2,)}


def test_layers_chain_shapes():
    model = specc.load(SPECS / "lenet.spec")["lenet"]
    assert [(layer.input_shape, layer.output_shape) for layer in model.layers] == [
        ((1, 28, 28), (20, 28, 28)),
        ((20, 28, 28), (20, 14, 14)),
        ((20, 14, 14), (50, 14, 14)),
        ((50, 14, 14), (50, 7, 7)),
        ((50, 7, 7), (2450,)),
        ((2450,), (500,)),
        ((500,), (500,)),  # Dropout
        ((500,), (10,)),
    ]


# ---------------------------------------------------------------- Keras automatic names


def names(*layers: str, input_line: str = "[1, 28, 28]") -> list[str]:
    return [layer.name for layer in build(input_line, *layers).layers]


def test_auto_names_count_per_type():
    assert names(
        "Conv2D(4, 3, padding=same)", "BatchNorm()", "LeakyReLU()", "Conv2D(4, 3, padding=same)",
        "BatchNorm()", "LeakyReLU(0.2)", "ConvTranspose2D(2, 2, stride=2)", "ConvTranspose2D(2, 1)",
        "MaxPool(2)", "AvgPool(2)", "Dropout(0.1)", "Flatten()", "Dense(8)", "Dense(2)",
    ) == [
        "conv2d_1", "batch_norm_1", "leaky_relu_1", "conv2d_2", "batch_norm_2", "leaky_relu_2",
        "conv_transpose2d_1", "conv_transpose2d_2", "max_pool_1", "avg_pool_1", "dropout_1", "flatten_1",
        "dense_1", "dense_2",
    ]


def test_auto_names_of_the_other_kinds():
    assert names("GlobalAvgPool()", "Reshape([1, 1])", "ReLU()", "Sigmoid()", "Tanh()", "Softmax()",
                 "GELU()", "ELU()", "SiLU()", "Reshape([1, 1])") == [
        "global_avg_pool_1", "reshape_1", "relu_1", "sigmoid_1", "tanh_1", "softmax_1",
        "gelu_1", "elu_1", "silu_1", "reshape_2",
    ]
    assert names("LSTM(4, return_sequences=true)", "GRU(4)", input_line="[5, 3]") == ["lstm_1", "gru_1"]
    assert names("Embedding(10, 4)", input_line="[5] int") == ["embedding_1"]


def test_user_names_do_not_consume_the_counter():
    assert names("first: Conv2D(4, 3)", "Conv2D(4, 3)", "conv_b: Conv2D(4, 3)", "Conv2D(4, 3)", "Flatten()",
                 "head: Dense(10)", "Dense(10)") == [
        "first", "conv2d_1", "conv_b", "conv2d_2", "flatten_1", "head", "dense_1",
    ]


def test_auto_names_skip_a_name_the_user_took():
    # The user's `conv2d_1` anywhere in the model keeps its name; unnamed layers go around it.
    assert names("Conv2D(4, 3)", "conv2d_1: Conv2D(4, 3)", "Conv2D(4, 3)") == ["conv2d_2", "conv2d_1", "conv2d_3"]


def test_auto_names_restart_in_each_model():
    program = specc.loads("model a {\n input [3]\n Dense(2)\n}\nmodel b {\n input [3]\n Dense(2)\n Dense(2)\n}\n")
    assert [x.name for x in program["a"].layers] == ["dense_1"]
    assert [x.name for x in program["b"].layers] == ["dense_1", "dense_2"]


# ---------------------------------------------------------------- let and arithmetic


@pytest.mark.parametrize("expr, value", [
    ("1 + 2 * 3", 7),
    ("(1 + 2) * 3", 9),
    ("10 - 4 - 3", 3),
    ("7 * 7 * 128", 6272),
    ("7 // 2", 3),
    ("100 // 7 // 2", 7),
    ("7 / 2", 3.5),
    ("8 / 2", 4.0),
    ("17 % 5", 2),
    ("2 ** 10", 1024),
    ("2 ** 3 ** 2", 512),
    ("-2 ** 2", -4),
    ("(-2) ** 2", 4),
    ("-3 + 5", 2),
    ("-(4 - 10)", 6),
    ("- -3", 3),
    ("+5", 5),
    ("2 * -3", -6),
    ("(28 - 5 + 1) // 2", 12),
    ("1e-3", 0.001),
    ("2.5e2", 250.0),
    ("0.5 * 4", 2.0),
    (".5", 0.5),
])
def test_let_arithmetic(expr, value):
    got = specc.loads(f"let x = {expr}\n").constants["x"]
    assert got == value
    assert type(got) is type(value)


def test_let_constants_chain_and_feed_layers():
    program = specc.loads(
        "let latent = 100\nlet c = 128\nlet side = 28 // 4\nlet hidden = (latent + c) // 2\n"
        "model g {\n    input [latent]\n    Dense(side * side * c)\n    Reshape([c, side, side])\n"
        "    Flatten()\n    Dense(hidden)\n}\n"
    )
    assert dict(program.constants) == {"latent": 100, "c": 128, "side": 7, "hidden": 114}
    model = program["g"]
    assert model.input_shape == (100,)
    assert [x.output_shape for x in model.layers] == [(6272,), (128, 7, 7), (6272,), (114,)]
    assert model.params == 100 * 6272 + 6272 + 6272 * 114 + 114


def test_statements_may_share_a_line_and_calls_span_lines():
    model = specc.loads("model m { input [784]; Dense(10,\n    activation=softmax) }\n")["m"]
    assert model.layers[0].attrs["activation"] == "softmax"


# ---------------------------------------------------------------- the seed specs


@pytest.mark.parametrize("spec, model, total, non_trainable", [
    ("perceptron", "perceptron", 7_850, 0),
    ("mlp", "mlp", 118_282, 0),
    ("lenet", "lenet", 1_256_080, 0),
    ("gan", "generator", 732_929, 12_544),
    ("gan", "discriminator", 13_185, 0),
    ("autoencoder", "autoencoder", 14_353, 0),
    ("lstm", "lstm", 81_674, 0),
    ("resnet50", "resnet50", 25_636_712, 53_120),  # Keras applications.ResNet50(weights=None)
    ("resnet_mnist", "resnet_mnist", 78_426, 672),  # the README graph example; Keras twin in test_graphs
])
def test_seed_spec_totals(spec, model, total, non_trainable):
    report = specc.summary(specc.load(SPECS / f"{spec}.spec")[model])
    assert report.total == total
    assert report.non_trainable == non_trainable
    assert report.trainable == total - non_trainable


@pytest.mark.parametrize("spec, model, per_layer", [
    ("lenet", "lenet", [520, 0, 25_050, 0, 0, 1_225_500, 0, 5_010]),
    ("mlp", "mlp", [100_480, 0, 16_512, 0, 1_290]),
    ("gan", "generator", [633_472, 25_088, 0, 0, 73_792, 0, 577]),
    ("gan", "discriminator", [640, 0, 0, 12_545]),
    ("autoencoder", "autoencoder", [320, 0, 4_624, 0, 4_640, 4_624, 145]),
    ("lstm", "lstm", [80_384, 1_290]),
])
def test_seed_spec_per_layer_params(spec, model, per_layer):
    assert [x.params for x in specc.load(SPECS / f"{spec}.spec")[model].layers] == per_layer


def test_every_seed_spec_is_covered():
    assert {p.stem for p in SPECS.glob("*.spec")} == {"perceptron", "mlp", "lenet", "gan", "autoencoder", "lstm",
                                                     "resnet50", "resnet_mnist"}
