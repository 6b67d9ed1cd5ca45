"""More graph specs against Keras functional models written by hand (the
issue-10 judge's method, as in test_graph_oracle.py), on forms that file does
not reach: keyword and positional block arguments, a default taken from a
`let`, named calls among unnamed ones, Dropout and BatchNorm inside bodies,
residual inside concat and concat inside residual, nested residuals, repeat
inside a block inside a repeat, concat along height, width, time and features,
sequences (LSTM, GRU, Embedding) in graphs, block parameters carrying
padding and activation words, and an import of a file that
itself imports from a subdirectory.

Specs: tests/specs/graphs/judge/judge_*.spec. Each Keras layer is named as the
language names the node ("/" written "."), so `load_canonical` assigns the
same canonical weights by name; totals, trainable and non-trainable counts,
output shapes and outputs on Keras, JAX and PyTorch must agree (1e-4).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import keras
import torch  # noqa: F401
import jax  # noqa: F401
import specc  # noqa: E402
from keras_twins import assert_model_equals_keras  # noqa: E402

L = keras.layers
CF = "channels_first"
JUDGE = Path(__file__).parent / "specs" / "graphs" / "judge"


def conv(name, filters, kernel, **kw):
    return L.Conv2D(filters, kernel, data_format=CF, kernel_initializer="zeros", name=name, **kw)


def dense(name, units, **kw):
    return L.Dense(units, kernel_initializer="zeros", name=name, **kw)


def bn(name, axis=1, **kw):
    return L.BatchNormalization(axis=axis, name=name, **kw)


def relu(name):
    return L.ReLU(name=name)


# ---------------------------------------------------------------- judge_wide.spec


def wide(p, x, filters, stride=1, rate=0.25):
    x = relu(f"{p}.relu_1")(bn(f"{p}.batch_norm_1")(x))
    y = conv(f"{p}.conv2d_1", filters, 3, strides=stride, padding="same", use_bias=False)(x)
    y = relu(f"{p}.relu_2")(bn(f"{p}.batch_norm_2", momentum=0.9)(y))
    y = conv(f"{p}.conv2d_2", filters, 3, padding="same")(L.Dropout(rate, name=f"{p}.dropout_1")(y))
    s = conv(f"{p}.conv2d_3", filters, 1, strides=stride)(x)
    return L.Add(name=f"{p}.add_1")([y, s])


def wrn():
    x = inputs = keras.Input((3, 12, 12))
    x = conv("stem", 8, 3, padding="same")(x)
    x = wide("g1", x, 8, rate=0.1)
    x = wide("g2", x, 16, stride=2)
    x = wide("wide_1", x, 16)
    x = relu("relu_1")(bn("batch_norm_1")(x))
    x = L.Flatten(name="flatten_1")(L.AveragePooling2D(2, data_format=CF, name="avg_pool_1")(x))
    return keras.Model(inputs, dense("dense_1", 7, activation="softmax")(x))


# ---------------------------------------------------------------- judge_incept.spec


def cbr(p, x, f, kernel=1):
    x = conv(f"{p}.conv2d_1", f, kernel, padding="same", use_bias=False)(x)
    return relu(f"{p}.relu_1")(bn(f"{p}.batch_norm_1")(x))


def inception(p, x, a, b, c):
    one = cbr(f"{p}.cbr_1", x, a)
    two = cbr(f"{p}.cbr_3", cbr(f"{p}.cbr_2", x, b), b, kernel=3)
    body = conv(f"{p}.conv2d_1", c, 3, padding="same")(cbr(f"{p}.cbr_4", x, c, 3))
    three = L.Add(name=f"{p}.add_1")([body, conv(f"{p}.conv2d_2", c, 1)(x)])
    return L.Concatenate(axis=1, name=f"{p}.concat_1")([one, two, three])


def incept():
    x = inputs = keras.Input((5, 8, 8))
    x = inception("inception_1", x, 2, 3, 4)
    y = L.Concatenate(axis=1, name="concat_1")([conv("conv2d_1", 4, 3, padding="same")(x), conv("conv2d_2", 5, 1)(x)])
    x = L.MaxPooling2D(2, data_format=CF, name="max_pool_1")(L.Add(name="add_1")([y, x]))
    x = L.Flatten(name="flatten_1")(inception("inception_2", x, 4, 2, 2))
    x = L.Dropout(0.5, name="dropout_1")(dense("dense_1", 16, activation="gelu")(x))
    return keras.Model(inputs, dense("dense_2", 3)(x))


# ---------------------------------------------------------------- judge_seq.spec


def seqnet():
    x = inputs = keras.Input((6, 4))
    x = L.Add(name="add_1")([dense("dense_1", 4, activation="tanh")(x), x])
    lstm = L.LSTM(5, return_sequences=True, kernel_initializer="zeros", recurrent_initializer="zeros", name="lstm_1")
    x = L.Concatenate(axis=2, name="concat_1")([lstm(x), dense("dense_2", 3)(x), x])
    gru = L.GRU(12, return_sequences=True, kernel_initializer="zeros", recurrent_initializer="zeros", name="gru_1")
    x = L.Concatenate(axis=1, name="concat_2")([x, gru(x)])
    x = L.LSTM(7, kernel_initializer="zeros", recurrent_initializer="zeros", name="lstm_2")(bn("batch_norm_1", -1)(x))
    y = dense("dense_4", 7)(dense("dense_3", 7, activation="relu")(x))
    x = L.Add(name="add_2")([y, x])
    return keras.Model(inputs, dense("dense_5", 2, activation="sigmoid")(x))


def tokens():
    x = inputs = keras.Input((9,), dtype="int32")
    x = L.Embedding(20, 6, name="embedding_1")(x)
    a = L.LSTM(4, kernel_initializer="zeros", recurrent_initializer="zeros", name="lstm_1")(x)
    b = L.GRU(3, kernel_initializer="zeros", recurrent_initializer="zeros", name="gru_1")(x)
    c = dense("dense_1", 5)(L.Flatten(name="flatten_1")(x))
    x = L.Concatenate(name="concat_1")([a, b, c])
    return keras.Model(inputs, dense("dense_2", 4, activation="softmax")(x))


# ---------------------------------------------------------------- judge_nest.spec


def unit(p, x, f):
    y = conv(f"{p}.conv2d_1", f, 3, padding="same", activation="relu")(x)
    y = conv(f"{p}.conv2d_2", f, 3, padding="same")(y)
    return relu(f"{p}.relu_1")(L.Add(name=f"{p}.add_1")([y, x]))


def stage(p, x, f, n):
    for i in range(1, n + 1):
        x = unit(f"{p}.unit_{i}", x, f)
    inner = L.Add(name=f"{p}.add_1")([unit(f"{p}.unit_{n + 1}", x, f), x])
    return L.Add(name=f"{p}.add_2")([conv(f"{p}.conv2d_1", f, 1)(inner), x])


def nest():
    x = inputs = keras.Input((4, 8, 8))
    for s in (1, 2):
        for c in (2 * s - 1, 2 * s):
            x = conv(f"conv2d_{c}", 4, 3, padding="same")(x)  # padding=1 of a 3x3 is 'same'
        x = stage(f"stage_{s}", x, 4, 2)
    x = stage("named", L.MaxPooling2D(2, data_format=CF, name="max_pool_1")(x), 4, 1)
    x = L.GlobalAveragePooling2D(CF, name="global_avg_pool_1")(x)
    return keras.Model(inputs, dense("dense_1", 2)(x))


# ---------------------------------------------------------------- judge_axes.spec


def axes():
    x = inputs = keras.Input((2, 6, 6))
    x = conv("conv2d_1", 3, 3, padding="same", activation="elu")(x)
    a = conv("conv2d_2", 3, 3, padding="same")(x)
    b = conv("conv2d_3", 3, 1)(L.MaxPooling2D((2, 1), data_format=CF, name="max_pool_1")(x))
    c = L.AveragePooling2D((2, 1), strides=(2, 1), data_format=CF, name="avg_pool_1")(x)
    x = L.Concatenate(axis=2, name="concat_1")([a, b, c])
    x = L.Concatenate(axis=3, name="concat_2")([x, conv("conv2d_4", 3, (1, 3), padding="same", activation="silu")(x)])
    y = L.LeakyReLU(negative_slope=0.2, name="leaky_relu_1")(bn("batch_norm_1")(x))
    y = conv("conv2d_5", 3, 3, padding="same", dilation_rate=2)(y)
    x = L.Flatten(name="flatten_1")(L.Add(name="add_1")([y, x]))
    return keras.Model(inputs, dense("dense_1", 5, activation="softmax")(x))


# ---------------------------------------------------------------- judge_imp.spec (lib/mid.spec, lib/deeper/base.spec)


def proj(p, x, f, s=2):
    return bn(f"{p}.batch_norm_1")(conv(f"{p}.conv2d_1", f, 1, strides=s, use_bias=False)(x))


def down(p, x, f):
    y = conv(f"{p}.conv2d_1", f, 3, strides=2, padding="same")(x)
    y = relu(f"{p}.relu_1")(bn(f"{p}.batch_norm_1")(y))
    y = bn(f"{p}.batch_norm_2")(conv(f"{p}.conv2d_2", f, 3, padding="same")(y))
    return relu(f"{p}.relu_2")(L.Add(name=f"{p}.add_1")([y, proj(f"{p}.proj_1", x, f)]))


def imp():
    x = inputs = keras.Input((3, 16, 16))
    x = conv("conv2d_1", 6, 3, padding="same")(x)
    x = proj("proj_1", down("down_2", down("down_1", x, 12), 24), 6, s=1)
    x = L.GlobalAveragePooling2D(CF, name="global_avg_pool_1")(x)
    x = dense("same_name_1.dense_1", 12, activation="relu")(x)
    return keras.Model(inputs, dense("dense_1", 4)(x))


def headless():
    inputs = keras.Input((12,))
    return keras.Model(inputs, dense("unit_1.dense_1", 3)(inputs))


# ---------------------------------------------------------------- judge_mlp.spec


def mix(p, x, a, b=4):
    one = dense(f"{p}.dense_1", a, activation="relu")(x)
    two = L.Add(name=f"{p}.add_1")([dense(f"{p}.dense_2", b, activation="tanh")(x), dense(f"{p}.dense_3", b)(x)])
    return L.Concatenate(name=f"{p}.concat_1")([one, two])


def mlp():
    x = inputs = keras.Input((10,))
    x = dense("dense_1", 16)(x)
    x = L.Add(name="add_1")([mix("mix_1", x, 12), x])
    x = L.Add(name="add_2")([L.Dropout(0.3, name="dropout_1")(mix("mix_2", x, 10, b=6)), x])
    x = bn("batch_norm_1", -1, momentum=0.8, epsilon=0.01)(x)
    y = L.Add(name="add_3")([dense("dense_2", 16, activation="sigmoid")(x), x])
    x = L.Add(name="add_4")([dense("dense_3", 16)(y), x])
    return keras.Model(inputs, dense("dense_4", 3)(x))


# ---------------------------------------------------------------- judge_words.spec


def words():
    x = inputs = keras.Input((2, 9, 9))
    a = conv("conv_1.conv2d_1", 3, 3, padding="same", activation="relu")(x)
    b = conv("conv_2.conv2d_1", 2, 5, padding="same", activation="tanh", use_bias=False)(x)
    x = L.Concatenate(axis=1, name="concat_1")([a, b, x])
    x = conv("conv_3.conv2d_1", 4, 3, activation="sigmoid")(x)
    x = conv("conv_4.conv2d_1", 4, 1)(L.ZeroPadding2D(1, data_format=CF)(x))
    x = L.MaxPooling2D(3, strides=2, padding="same", data_format=CF, name="max_pool_1")(x)
    a = conv("conv2d_1", 4, (2, 1))(x)
    b = L.Add(name="add_1")([conv("conv_5.conv2d_1", 4, 3, padding="same", activation="relu", use_bias=False)(x), x])
    return keras.Model(inputs, L.Concatenate(axis=2, name="concat_2")([a, b]))


# ---------------------------------------------------------------- judge_layout.spec


def layout():
    x = inputs = keras.Input((3, 6, 8))
    x = conv("conv2d_1", 4, 3, padding="same")(x)
    a, b = dense("dense_1", 5, activation="relu")(x), conv("conv2d_2", 4, (1, 4))(x)
    x = L.Concatenate(axis=3, name="concat_1")([a, b])
    x = L.Add(name="add_1")([bn("batch_norm_1")(dense("dense_2", 10)(x)), x])
    x = L.Reshape((4, 60), name="reshape_1")(x)
    lstm = L.LSTM(3, return_sequences=True, kernel_initializer="zeros", recurrent_initializer="zeros", name="lstm_1")
    x = L.Concatenate(axis=2, name="concat_2")([lstm(x), dense("dense_3", 4)(x)])
    x = L.Reshape((1, 4, 7), name="reshape_2")(x)
    x = L.Add(name="add_2")([conv("conv2d_3", 2, 3, padding="same")(x), conv("conv2d_4", 2, 1, use_bias=False)(x)])
    x = L.GlobalAveragePooling2D(CF, name="global_avg_pool_1")(x)
    return keras.Model(inputs, dense("dense_4", 3)(x))


ORACLES = {
    ("judge_wide", "wrn"): wrn,
    ("judge_incept", "incept"): incept,
    ("judge_seq", "seqnet"): seqnet,
    ("judge_seq", "tokens"): tokens,
    ("judge_nest", "nest"): nest,
    ("judge_axes", "axes"): axes,
    ("judge_imp", "imp"): imp,
    ("judge_imp", "headless"): headless,
    ("judge_mlp", "mlp"): mlp,
    ("judge_words", "words"): words,
    ("judge_layout", "layout"): layout,
}


@pytest.mark.parametrize("spec, name", list(ORACLES), ids=[f"{s}:{n}" for s, n in ORACLES])
def test_spec_equals_its_hand_built_keras_model(spec, name):
    assert_model_equals_keras(specc.load(JUDGE / f"{spec}.spec")[name], ORACLES[spec, name](), f"{spec}:{name}")


def test_every_judge_spec_model_has_its_keras_model():
    specs = {p.stem: specc.load(p) for p in JUDGE.glob("judge_*.spec")}
    assert {(stem, name) for stem, program in specs.items() for name in program.models} == set(ORACLES)


@pytest.mark.parametrize("spec", sorted({s for s, _ in ORACLES}))
def test_judge_specs_survive_the_ir_json_round_trip(spec):
    program = specc.load(JUDGE / f"{spec}.spec")
    again = specc.ir.Program.from_json(program.to_json())
    assert json.loads(program.to_json())["specc_ir"] == 2
    for name, model in program.models.items():
        assert again[name] == model and again[name].layers == model.layers
