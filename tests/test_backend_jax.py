"""The JAX/Flax backend against an independent numpy reference.

The reference below implements the IR contract directly (loops and einsums in
float64, channels-first, no framework), one function per layer kind, and runs
a graph's nodes in order over a name -> array map; the backend must agree with
it at rtol/atol 1e-5 for every layer kind and option, merges included.
Sizes are tiny so that jit compiles dominate and the file stays fast.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

# A hard import: CI installs .[all,dev], so a missing framework must fail here, not skip.
import jax  # noqa: E402

from specc import backend as registry  # noqa: E402
from backend_cases import GRAPHS, Graph, graph_small  # noqa: E402
from specc.catalogue import LAYERS, make_layer  # noqa: E402
from specc.ir import INPUT, Model  # noqa: E402
from specc.weights import init_weights  # noqa: E402

B = registry.get("jax")
from specc.backends.jax_flax import convert, layers  # noqa: E402

RTOL = ATOL = 1e-5


# ---------------------------------------------------------------- model helpers


def seq(input_shape, *specs, dtype="float32", name="m") -> Model:
    """A model from (kind, kwargs) pairs, named like the checker names them."""
    shape, out, counts = tuple(input_shape), [], {}
    for kind, kwargs in specs:
        counts[kind] = counts.get(kind, 0) + 1
        layer = make_layer(kind, f"{LAYERS[kind].snake}_{counts[kind]}", shape, **kwargs)
        out.append(layer)
        shape = layer.output_shape
    return Model(name, tuple(input_shape), tuple(out), input_dtype=dtype)


def random_weights(model: Model, seed: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    weights = {}
    for key, spec in model.weight_specs().items():
        if spec.name == "moving_variance":
            w = rng.uniform(0.5, 2.0, spec.shape)
        else:
            w = rng.standard_normal(spec.shape) * 0.5
        weights[key] = w.astype(np.float32)
    return weights


def random_input(model: Model, n: int = 3, seed: int = 2) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if model.input_dtype == "int32":
        vocab = model.layers[0].attrs["vocab"]
        return rng.integers(0, vocab, (n, *model.input_shape)).astype(np.int32)
    return rng.standard_normal((n, *model.input_shape)).astype(np.float32)


# ---------------------------------------------------------------- numpy reference


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


_erf = np.vectorize(math.erf)


def _softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


REF_ACT = {
    "linear": lambda x: x,
    "relu": lambda x: np.maximum(x, 0.0),
    "sigmoid": _sigmoid,
    "tanh": np.tanh,
    "softmax": _softmax,
    "leaky_relu": lambda x: np.where(x > 0, x, 0.01 * x),
    "gelu": lambda x: 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0))),
    "elu": lambda x: np.where(x > 0, x, np.expm1(np.minimum(x, 0.0))),
    "silu": lambda x: x * _sigmoid(x),
}


def ref_dense(layer, w, x):
    y = x @ w["kernel"]
    if layer.attrs["bias"]:
        y = y + w["bias"]
    return REF_ACT[layer.attrs["activation"]](y)


def ref_conv2d(layer, w, x):
    a = layer.attrs
    (pt, pb), (pl, pr) = a["padding"]
    xp = np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    k = w["kernel"]  # [kh, kw, C, F]
    kh, kw, _, f = k.shape
    (sh, sw), (dh, dw) = a["stride"], a["dilation"]
    oh = (xp.shape[2] - dh * (kh - 1) - 1) // sh + 1
    ow = (xp.shape[3] - dw * (kw - 1) - 1) // sw + 1
    y = np.zeros((x.shape[0], f, oh, ow))
    for i in range(kh):
        for j in range(kw):
            patch = xp[:, :, i * dh: i * dh + sh * (oh - 1) + 1: sh, j * dw: j * dw + sw * (ow - 1) + 1: sw]
            y += np.einsum("nchw,cf->nfhw", patch, k[i, j])
    if a["bias"]:
        y += w["bias"][None, :, None, None]
    return REF_ACT[a["activation"]](y)


def ref_conv_transpose2d(layer, w, x):
    # Scatter every input pixel's kernel into the full output, then crop
    # (lo, hi) per axis; a negative hi appends positions that get only the bias.
    a = layer.attrs
    k = w["kernel"]  # [kh, kw, F, C]
    kh, kw, f, _ = k.shape
    sh, sw = a["stride"]
    n, _, h, wd = x.shape
    full = np.zeros((n, f, (h - 1) * sh + kh, (wd - 1) * sw + kw))
    for i in range(h):
        for j in range(wd):
            full[:, :, i * sh: i * sh + kh, j * sw: j * sw + kw] += np.einsum("nc,abfc->nfab", x[:, :, i, j], k)
    (lo_h, hi_h), (lo_w, hi_w) = a["padding"]
    full = np.pad(full, ((0, 0), (0, 0), (0, max(-hi_h, 0)), (0, max(-hi_w, 0))))
    y = full[:, :, lo_h: full.shape[2] - max(hi_h, 0), lo_w: full.shape[3] - max(hi_w, 0)]
    if a["bias"]:
        y = y + w["bias"][None, :, None, None]
    return REF_ACT[a["activation"]](y)


def _ref_pool(reduce):
    def pool(layer, w, x):
        a = layer.attrs
        (kh, kw), (sh, sw), ((pt, pb), (pl, pr)) = a["size"], a["stride"], a["padding"]
        n, c, h, wd = x.shape
        oh, ow = (h + pt + pb - kh) // sh + 1, (wd + pl + pr - kw) // sw + 1
        y = np.zeros((n, c, oh, ow))
        for i in range(oh):
            for j in range(ow):
                r, q = i * sh - pt, j * sw - pl
                window = x[:, :, max(r, 0): min(r + kh, h), max(q, 0): min(q + kw, wd)]  # real values only
                y[:, :, i, j] = reduce(window, axis=(2, 3))
        return y

    return pool


def ref_batch_norm(layer, w, x):
    axis = layer.attrs["axis"] + 1
    shape = [1] * x.ndim
    shape[axis] = -1
    r = lambda v: v.reshape(shape)  # noqa: E731
    inv = 1.0 / np.sqrt(r(w["moving_variance"]) + layer.attrs["epsilon"])
    return (x - r(w["moving_mean"])) * inv * r(w["gamma"]) + r(w["beta"])


def ref_lstm(layer, w, x):
    a = layer.attrs
    u, act = a["units"], REF_ACT[a["activation"]]
    h = np.zeros((x.shape[0], u))
    c = np.zeros_like(h)
    hs = []
    for t in range(x.shape[1]):
        z = x[:, t] @ w["kernel"] + h @ w["recurrent_kernel"] + w["bias"]
        i, f, g, o = (z[:, q * u:(q + 1) * u] for q in range(4))
        c = _sigmoid(f) * c + _sigmoid(i) * act(g)
        h = _sigmoid(o) * act(c)
        hs.append(h)
    return np.stack(hs, axis=1) if a["return_sequences"] else h


def ref_gru(layer, w, x):
    a = layer.attrs
    u, act = a["units"], REF_ACT[a["activation"]]
    h = np.zeros((x.shape[0], u))
    hs = []
    for t in range(x.shape[1]):
        mx = x[:, t] @ w["kernel"] + w["bias"][0]
        mh = h @ w["recurrent_kernel"] + w["bias"][1]
        z = _sigmoid(mx[:, :u] + mh[:, :u])
        r = _sigmoid(mx[:, u:2 * u] + mh[:, u:2 * u])
        cand = act(mx[:, 2 * u:] + r * mh[:, 2 * u:])
        h = z * h + (1 - z) * cand
        hs.append(h)
    return np.stack(hs, axis=1) if a["return_sequences"] else h


def ref_activation(layer, w, x):
    if layer.kind == "LeakyReLU":
        return np.where(x > 0, x, layer.attrs["alpha"] * x)
    return REF_ACT[layer.attrs["activation"]](x)


REF = {
    "Dense": ref_dense,
    "Conv2D": ref_conv2d,
    "ConvTranspose2D": ref_conv_transpose2d,
    "MaxPool": _ref_pool(np.max),
    "AvgPool": _ref_pool(np.mean),
    "GlobalAvgPool": lambda layer, w, x: x.mean(axis=(2, 3)),
    "BatchNorm": ref_batch_norm,
    "LSTM": ref_lstm,
    "GRU": ref_gru,
    "Embedding": lambda layer, w, x: w["embeddings"][x],
    "Flatten": lambda layer, w, x: x.reshape(x.shape[0], -1),
    "Reshape": lambda layer, w, x: x.reshape(x.shape[0], *layer.attrs["shape"]),
    "Dropout": lambda layer, w, x: x,
    "Add": lambda layer, w, xs: sum(xs),
    "Concat": lambda layer, w, xs: np.concatenate(xs, axis=layer.attrs["axis"] + 1),
    **{kind: ref_activation for kind in ("ReLU", "Sigmoid", "Tanh", "Softmax", "GELU", "ELU", "SiLU", "LeakyReLU")},
}


def ref_forward(model: Model, weights, x) -> np.ndarray:
    x = x if model.input_dtype == "int32" else np.asarray(x, np.float64)
    values = {INPUT: x}
    for layer in model.layers:
        w = {spec.name: np.asarray(weights[layer.weight_key(spec.name)], np.float64) for spec in layer.weights}
        inputs = [values[name] for name in layer.inputs]
        x = REF[layer.kind](layer, w, inputs if layer.is_merge else inputs[0])
        assert x.shape[1:] == layer.output_shape, layer.name
        values[layer.name] = x
    return x


# ---------------------------------------------------------------- cases

IMG = (2, 7, 9)  # odd sizes on purpose
SEQ = (5, 3)


def conv(**kw):
    return ("Conv2D", {"filters": 3, "kernel": 3, **kw})


def tconv(**kw):
    return ("ConvTranspose2D", {"filters": 2, **kw})


CASES: dict[str, Model] = {
    # Dense
    "dense": seq((6,), ("Dense", {"units": 4, "activation": "relu"})),
    "dense_nobias": seq((6,), ("Dense", {"units": 4, "bias": False})),
    "dense_on_sequence": seq(SEQ, ("Dense", {"units": 4, "activation": "tanh"})),
    "dense_after_conv": seq(IMG, conv(padding="same"), ("Dense", {"units": 4})),  # acts on W
    # Conv2D
    "conv_valid": seq(IMG, conv()),
    "conv_rect_stride_same": seq(IMG, conv(kernel=(2, 3), stride=(2, 1), padding="same")),
    "conv_stride2_same_odd": seq(IMG, conv(stride=2, padding="same", activation="relu")),
    "conv_dilation_valid": seq(IMG, conv(dilation=2)),
    "conv_dilation_rect_same": seq(IMG, conv(dilation=(2, 1), padding="same")),
    "conv_explicit_pad_stride": seq(IMG, conv(padding=(1, 2), stride=2)),
    "conv_k5_stride3_same_nobias": seq(IMG, conv(kernel=5, stride=3, padding="same", bias=False, activation="tanh")),
    "conv_softmax_lastaxis": seq(IMG, conv(padding="same", activation="softmax")),
    "conv_flatten_dense": seq(IMG, conv(stride=2), ("Flatten", {}), ("Dense", {"units": 5})),
    "conv_conv_same": seq(IMG, conv(padding="same", activation="elu"), conv(filters=4, kernel=(3, 1), stride=(1, 2))),
    # ConvTranspose2D: k < s, k == s, k > s, valid and same, rectangular
    "tconv_k1_s2_valid": seq((2, 4, 5), tconv(kernel=1, stride=2)),
    "tconv_k1_s3_same": seq((2, 4, 5), tconv(kernel=1, stride=3, padding="same")),
    "tconv_k2_s2_valid": seq((2, 4, 5), tconv(kernel=2, stride=2)),
    "tconv_k2_s2_same": seq((2, 4, 5), tconv(kernel=2, stride=2, padding="same")),
    "tconv_k3_s2_valid": seq((2, 4, 5), tconv(kernel=3, stride=2)),
    "tconv_k3_s2_same": seq((2, 4, 5), tconv(kernel=3, stride=2, padding="same", activation="relu")),
    "tconv_k4_s2_same": seq((2, 4, 5), tconv(kernel=4, stride=2, padding="same")),
    "tconv_k3_s1_same": seq((2, 4, 5), tconv(kernel=3, padding="same", bias=False)),
    "tconv_rect": seq((2, 4, 5), tconv(kernel=(3, 2), stride=(2, 3), padding="same")),
    "tconv_rect_valid": seq((2, 4, 5), tconv(kernel=(2, 5), stride=(3, 2))),
    "conv_tconv": seq(IMG, conv(stride=2, padding="same"), tconv(kernel=3, stride=2, padding="same")),
    # pools
    "maxpool_valid": seq(IMG, ("MaxPool", {"size": 2})),
    "maxpool_same_odd": seq(IMG, ("MaxPool", {"size": 2, "padding": "same"})),
    "maxpool_3s2_same": seq(IMG, conv(padding="same"), ("MaxPool", {"size": 3, "stride": 2, "padding": "same"})),
    "maxpool_explicit": seq(IMG, ("MaxPool", {"size": 3, "stride": 1, "padding": 1})),
    "maxpool_rect": seq(IMG, ("MaxPool", {"size": (2, 3), "stride": (1, 2)})),
    "avgpool_valid": seq(IMG, ("AvgPool", {"size": 2})),
    "avgpool_same_odd": seq(IMG, ("AvgPool", {"size": 2, "padding": "same"})),
    "avgpool_3s2_same": seq(IMG, conv(padding="same"), ("AvgPool", {"size": 3, "stride": 2, "padding": "same"})),
    "avgpool_explicit": seq(IMG, ("AvgPool", {"size": 3, "stride": 1, "padding": (1, 2)})),
    "avgpool_rect_same": seq(IMG, ("AvgPool", {"size": (3, 2), "stride": (2, 3), "padding": "same"})),
    "global_avg_pool": seq(IMG, conv(padding="same"), ("GlobalAvgPool", {}), ("Dense", {"units": 2})),
    # BatchNorm on [C,H,W] (input, after a conv), [F] and [T,F]
    "bn_image_input": seq(IMG, ("BatchNorm", {})),
    "bn_after_conv": seq(IMG, conv(padding="same"), ("BatchNorm", {"epsilon": 1e-2}), ("Flatten", {})),
    "bn_vector": seq((6,), ("Dense", {"units": 4}), ("BatchNorm", {"momentum": 0.9})),
    "bn_sequence": seq(SEQ, ("BatchNorm", {})),
    # recurrent
    "lstm_last": seq(SEQ, ("LSTM", {"units": 4})),
    "lstm_sequences": seq(SEQ, ("LSTM", {"units": 4, "return_sequences": True})),
    "lstm_relu": seq(SEQ, ("LSTM", {"units": 3, "return_sequences": True, "activation": "relu"})),
    "gru_last": seq(SEQ, ("GRU", {"units": 4})),
    "gru_sequences": seq(SEQ, ("GRU", {"units": 4, "return_sequences": True})),
    "gru_stack": seq(SEQ, ("GRU", {"units": 3, "return_sequences": True, "activation": "sigmoid"}),
                     ("LSTM", {"units": 2})),
    # Embedding, Reshape, Flatten, Dropout
    "embedding_lstm": seq((6,), ("Embedding", {"vocab": 11, "dim": 4}), ("LSTM", {"units": 3}), dtype="int32"),
    "embedding_flatten": seq((6,), ("Embedding", {"vocab": 11, "dim": 4}), ("Flatten", {}),
                             ("Dense", {"units": 2}), dtype="int32"),
    "reshape_image_to_sequence": seq(IMG, conv(padding="same"), ("Reshape", {"shape": (-1, 9)}),
                                     ("GRU", {"units": 2, "return_sequences": True})),
    "dense_reshape_conv": seq((6,), ("Dense", {"units": 24}), ("Reshape", {"shape": (2, 3, 4)}),
                              conv(kernel=2), ("Flatten", {})),
    "flatten_input": seq(IMG, ("Flatten", {})),
    "dropout_inference": seq((6,), ("Dropout", {"rate": 0.5}), ("Dense", {"units": 3})),
    # activation layers on images (NHWC inside; softmax over the last, W, axis) and vectors
    "act_layers_image": seq(IMG, conv(padding="same"), ("ReLU", {}), conv(padding="same"), ("Sigmoid", {}),
                            conv(padding="same"), ("Tanh", {}), conv(padding="same"), ("GELU", {}),
                            conv(padding="same"), ("ELU", {}), conv(padding="same"), ("SiLU", {}),
                            conv(padding="same"), ("LeakyReLU", {"alpha": 0.2}), conv(padding="same"),
                            ("Softmax", {})),
    "act_layers_vector": seq((6,), ("Softmax", {}), ("GELU", {}), ("LeakyReLU", {}), ("ELU", {}),
                             ("SiLU", {}), ("Tanh", {}), ("Sigmoid", {}), ("ReLU", {})),
}
# every activation name, as Dense's `activation` (one model: compiles dominate the time)
CASES["dense_every_activation"] = seq((6,), *(("Dense", {"units": 5, "activation": act}) for act in (
    "linear", "relu", "sigmoid", "tanh", "softmax", "leaky_relu", "gelu", "elu", "silu")))




def graph_layouts() -> Model:
    """Merges of values held in different layouts inside Flax: the model input
    (channels-first) with conv outputs (NHWC); Dense on the merged image (its
    last, W, axis); a vector concat; an Add that is the model output."""
    g = Graph(IMG)
    a = g("Conv2D", filters=2, kernel=3, padding="same")
    s = g("Add", a, INPUT, a)
    c = g("Concat", s, g("MaxPool", INPUT, size=3, stride=1, padding="same"), axis=-1)  # [2, 7, 18]
    d = g("Dense", c, units=4)  # [2, 7, 4]
    v = g("Concat", g("GlobalAvgPool", a), g("Flatten", d), axis=0)  # [2 + 56]
    g("Add", g("Dense", v, units=3), g("Dense", v, units=3, activation="relu"))
    return g.model("layouts")


CASES.update(GRAPHS)
CASES["graph_layouts"] = graph_layouts()
CASES["graph_small"] = graph_small()


def test_cases_cover_every_layer_kind():
    covered = {layer.kind for model in CASES.values() for layer in model.layers}
    assert covered == set(LAYERS)


# ---------------------------------------------------------------- tests


def test_registry_complete():
    assert set(layers.LOWER) == set(LAYERS)
    for name in ("build", "to_native", "from_native", "run", "forward_train", "gradients", "apply_fn"):
        assert callable(getattr(B, name)), name


@pytest.mark.parametrize("case", sorted(CASES))
def test_run_matches_numpy_reference(case):
    model = CASES[case]
    weights = random_weights(model)
    x = random_input(model)
    y = B.run(model, weights, x)
    assert y.dtype == np.float32
    assert y.shape == (x.shape[0], *model.output_shape)
    np.testing.assert_allclose(y, ref_forward(model, weights, x), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("case", sorted(CASES))
def test_native_round_trip_and_count(case):
    model = CASES[case]
    weights = random_weights(model)
    native = B.to_native(model, weights)
    back = B.from_native(model, native)
    assert back.keys() == weights.keys()
    for key, value in weights.items():
        assert back[key].dtype == np.float32
        assert np.array_equal(back[key].view(np.uint32), value.view(np.uint32)), key
    assert convert.count(native) == model.params
    # the module's own variables have exactly the structure and shapes of to_native's
    x = random_input(model, n=1)
    shapes = jax.eval_shape(B.build(model).init, jax.random.key(0), x)
    expect = jax.tree.map(lambda a: a.shape, {c: v for c, v in native.items() if v})
    assert jax.tree.map(lambda a: a.shape, dict(shapes)) == expect


def test_run_reuses_compiled_function():
    model = CASES["conv_flatten_dense"]
    weights, x = random_weights(model), random_input(model)
    B.run(model, weights, x)
    before = B._compiled.cache_info().hits
    infer = B._compiled(B._key(model))[0]
    size = infer._cache_size()
    B.run(model, random_weights(model, seed=5), x)
    assert B._compiled.cache_info().hits > before
    assert infer._cache_size() == size


# ---------------------------------------------------------------- gradients

GRAD_MODELS = {
    "cnn": seq((2, 6, 5), conv(stride=2, padding="same", activation="tanh"), ("BatchNorm", {}),
               ("MaxPool", {"size": 2, "padding": "same"}), tconv(kernel=3, stride=2, padding="same"),
               ("AvgPool", {"size": 2, "padding": "same"}), ("Flatten", {}),
               ("Dense", {"units": 3, "activation": "gelu"})),
    "rnn": seq((4, 3), ("LSTM", {"units": 3, "return_sequences": True}), ("GRU", {"units": 2}),
               ("Dense", {"units": 2, "activation": "softmax"})),
    "embedding": seq((4,), ("Embedding", {"vocab": 7, "dim": 3}), ("Flatten", {}), ("Dropout", {"rate": 0.5}),
                     ("Dense", {"units": 2, "activation": "silu"}), dtype="int32"),
    "graph": graph_small(),
}


@pytest.mark.parametrize("case", sorted(GRAD_MODELS))
def test_gradients_match_finite_differences(case):
    model = GRAD_MODELS[case]
    weights = random_weights(model)
    x = random_input(model, n=2)
    target = np.random.default_rng(3).standard_normal((2, *model.output_shape)).astype(np.float32)
    loss, grads = B.gradients(model, weights, x, target)

    trainable = {k for k, s in model.weight_specs().items() if s.trainable}
    assert set(grads) == trainable
    w64 = {k: v.astype(np.float64) for k, v in weights.items()}

    def ref_loss(w):
        return float(np.mean((ref_forward(model, w, x) - target) ** 2))

    assert loss == pytest.approx(ref_loss(w64), rel=1e-5)
    rng, eps = np.random.default_rng(4), 1e-6
    for key in sorted(trainable):
        assert grads[key].shape == weights[key].shape and grads[key].dtype == np.float32
        flat = rng.choice(weights[key].size, size=min(4, weights[key].size), replace=False)
        for index in flat:
            idx = np.unravel_index(index, weights[key].shape)
            plus, minus = dict(w64), dict(w64)
            plus[key], minus[key] = w64[key].copy(), w64[key].copy()
            plus[key][idx] += eps
            minus[key][idx] -= eps
            fd = (ref_loss(plus) - ref_loss(minus)) / (2 * eps)
            assert grads[key][idx] == pytest.approx(fd, rel=1e-3, abs=1e-5), (key, idx)


# ---------------------------------------------------------------- training mode


@pytest.mark.parametrize("case", ["bn_image_input", "bn_after_conv", "bn_vector", "bn_sequence"])
def test_forward_train_updates_moving_stats_keras_formula(case):
    model = CASES[case]
    weights = random_weights(model)
    x = random_input(model, n=4)
    y, updated = B.forward_train(model, weights, x)

    bn_index = next(i for i, layer in enumerate(model.layers) if layer.kind == "BatchNorm")
    bn = model.layers[bn_index]
    h = ref_forward(Model("head", model.input_shape, model.layers[:bn_index]), weights, x)
    axis = bn.attrs["axis"] + 1
    reduce = tuple(i for i in range(h.ndim) if i != axis)
    mean, var = h.mean(axis=reduce), h.var(axis=reduce)  # biased variance
    m = bn.attrs["momentum"]
    key = bn.weight_key
    np.testing.assert_allclose(updated[key("moving_mean")], m * weights[key("moving_mean")] + (1 - m) * mean,
                               rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(updated[key("moving_variance")],
                               m * weights[key("moving_variance")] + (1 - m) * var, rtol=RTOL, atol=ATOL)
    for k in weights:  # everything else untouched
        if "moving" not in k:
            assert np.array_equal(updated[k], weights[k])

    # the output is normalised with the batch statistics
    batch_weights = dict(weights)
    batch_weights[key("moving_mean")] = mean.astype(np.float32)
    batch_weights[key("moving_variance")] = var.astype(np.float32)
    np.testing.assert_allclose(y, ref_forward(model, batch_weights, x), rtol=1e-4, atol=1e-4)


def test_forward_train_dropout():
    model = seq((200,), ("Dropout", {"rate": 0.5}))
    x = np.ones((2, 200), np.float32)
    y0, w = B.forward_train(model, {}, x, seed=0)
    assert w == {}
    assert set(np.unique(y0)) <= {0.0, 2.0}
    assert 0.3 < (y0 == 0).mean() < 0.7
    assert np.array_equal(y0, B.forward_train(model, {}, x, seed=0)[0])
    assert not np.array_equal(y0, B.forward_train(model, {}, x, seed=1)[0])
    assert np.array_equal(B.run(model, {}, x), x)


def test_apply_fn_is_pure_and_jittable():
    model = seq(IMG, conv(padding="same"), ("BatchNorm", {}), ("Flatten", {}), ("Dropout", {"rate": 0.25}),
                ("Dense", {"units": 4, "activation": "softmax"}))
    weights = init_weights(model, seed=0)
    variables = B.to_native(model, weights)
    x = random_input(model, n=4)
    apply = jax.jit(B.apply_fn(model), static_argnums=2)
    y, stats = apply(variables, x, False, None)
    np.testing.assert_allclose(np.asarray(y), ref_forward(model, weights, x), rtol=RTOL, atol=ATOL)
    assert jax.tree.map(np.shape, stats) == jax.tree.map(np.shape, variables["batch_stats"])
    y_train, new_stats = apply(variables, x, True, B.DropoutNoise(step=0, seed=0))
    assert y_train.shape == y.shape
    assert not np.array_equal(new_stats["batch_norm_1"]["mean"], variables["batch_stats"]["batch_norm_1"]["mean"])
    with pytest.raises(ValueError, match="rng"):
        B.apply_fn(model)(variables, x, True, None)

    assert B.output_activation(model) == "softmax"
    logits, _ = jax.jit(B.apply_fn(model, logits=True), static_argnums=2)(variables, x, False, None)
    np.testing.assert_allclose(jax.nn.softmax(logits, axis=-1), y, rtol=RTOL, atol=1e-6)


def test_input_shape_is_checked():
    model = CASES["dense"]
    with pytest.raises(ValueError, match="batch of shape"):
        B.run(model, random_weights(model), np.zeros((2, 5), np.float32))
    with pytest.raises(ValueError, match="missing"):
        B.run(model, {}, np.zeros((2, 6), np.float32))
