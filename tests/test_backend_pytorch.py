"""The PyTorch backend against independent numpy references of the contract.

The references below are written from the language contract (loops and
einsums, float64), not from torch: convolutions gather explicit zero pads,
transposed convolutions scatter each input pixel's kernel into the full
output and crop it the way Keras sizes it, pools look only at real values,
recurrent layers follow Keras's cell equations with Keras's gate order.
Graphs run their nodes in order over a name -> array map; Add sums, Concat
joins along the sample axis + 1.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

# A hard import: CI installs .[all,dev], so a missing framework must fail here, not skip.
import torch  # noqa: E402

import specc  # noqa: E402
from specc import backend as registry  # noqa: E402
from backend_cases import GRAPHS, Graph, graph_small  # noqa: E402
from specc.catalogue import ACTIVATIONS, LAYERS, make_layer  # noqa: E402
from specc.ir import INPUT, Layer, Model  # noqa: E402

P = registry.get("torch")
from specc.backends.pytorch import convert  # noqa: E402
from specc.backends.pytorch.layers import LOWER  # noqa: E402

RTOL = ATOL = 1e-5


# ---------------------------------------------------------------- numpy references

_erf = np.vectorize(math.erf)


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def ref_activation(x, name, alpha=0.01):
    if name == "linear":
        return x
    if name == "relu":
        return np.maximum(x, 0.0)
    if name == "sigmoid":
        return _sigmoid(x)
    if name == "tanh":
        return np.tanh(x)
    if name == "softmax":
        e = np.exp(x - x.max(axis=-1, keepdims=True))
        return e / e.sum(axis=-1, keepdims=True)
    if name == "leaky_relu":
        return np.where(x >= 0, x, alpha * x)
    if name == "gelu":
        return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))
    if name == "elu":
        return np.where(x > 0, x, np.expm1(np.minimum(x, 0.0)))
    if name == "silu":
        return x * _sigmoid(x)
    raise AssertionError(name)


def ref_conv2d(x, kernel, bias, stride, dilation, pads):
    n, c, h, w = x.shape
    kh, kw, _, f = kernel.shape
    xp = np.pad(x, ((0, 0), (0, 0), tuple(pads[0]), tuple(pads[1])))
    oh = (xp.shape[2] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    ow = (xp.shape[3] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    out = np.zeros((n, f, oh, ow))
    for i in range(oh):
        for j in range(ow):
            for a in range(kh):
                for b in range(kw):
                    out[:, :, i, j] += xp[:, :, i * stride[0] + a * dilation[0], j * stride[1] + b * dilation[1]] @ kernel[a, b]
    if bias is not None:
        out += bias[None, :, None, None]
    return out


def _keras_transpose_crop(size, k, s, padding):
    """Keras's Conv2DTranspose output length, as (lo, hi) removed from the
    full scatter output of length (size-1)*s + k (negative hi: extend)."""
    full = (size - 1) * s + k
    if padding == "same":
        out, lo = size * s, max(k - s, 0) // 2  # the transpose of a strided 'same' conv
    else:
        out, lo = size * s + max(k - s, 0), 0  # keras deconv_output_length, valid
    return lo, full - out - lo


def ref_conv_transpose2d(x, kernel, bias, stride, crop):
    n, c, h, w = x.shape
    kh, kw, f, _ = kernel.shape
    full = np.zeros((n, f, (h - 1) * stride[0] + kh, (w - 1) * stride[1] + kw))
    for p in range(h):
        for q in range(w):
            full[:, :, p * stride[0]: p * stride[0] + kh, q * stride[1]: q * stride[1] + kw] += np.einsum(
                "nc,abfc->nfab", x[:, :, p, q], kernel)
    (t, b), (l, r) = crop
    full = np.pad(full, ((0, 0), (0, 0), (0, max(-b, 0)), (0, max(-r, 0))))
    out = full[:, :, t: full.shape[2] - max(b, 0), l: full.shape[3] - max(r, 0)]
    if bias is not None:
        out = out + bias[None, :, None, None]
    return out


def ref_pool(x, size, stride, pads, kind):
    n, c, h, w = x.shape
    (t, b), (l, r) = pads
    oh = (h + t + b - size[0]) // stride[0] + 1
    ow = (w + l + r - size[1]) // stride[1] + 1
    out = np.zeros((n, c, oh, ow))
    for i in range(oh):
        for j in range(ow):
            rows = [y for y in range(i * stride[0] - t, i * stride[0] - t + size[0]) if 0 <= y < h]
            cols = [z for z in range(j * stride[1] - l, j * stride[1] - l + size[1]) if 0 <= z < w]
            win = x[:, :, rows][:, :, :, cols]
            out[:, :, i, j] = win.max(axis=(2, 3)) if kind == "max" else win.mean(axis=(2, 3))
    return out


def _bn_view(x, axis, v):
    shape = [1] * x.ndim
    shape[axis + 1] = -1
    return v.reshape(shape)


def ref_batch_norm(x, w, name, axis, eps, mean=None, var=None):
    mean = w[f"{name}/moving_mean"] if mean is None else mean
    var = w[f"{name}/moving_variance"] if var is None else var
    g, b = w[f"{name}/gamma"], w[f"{name}/beta"]
    v = lambda a: _bn_view(x, axis, a)  # noqa: E731
    return (x - v(mean)) / np.sqrt(v(var) + eps) * v(g) + v(b)


def ref_lstm(x, kernel, rec, bias, units, return_sequences, act):
    n, t, _ = x.shape
    h, c = np.zeros((n, units)), np.zeros((n, units))
    outs = []
    for s in range(t):
        z = x[:, s] @ kernel + h @ rec + bias
        i, f, cc, o = (z[:, k * units: (k + 1) * units] for k in range(4))
        c = _sigmoid(f) * c + _sigmoid(i) * ref_activation(cc, act)
        h = _sigmoid(o) * ref_activation(c, act)
        outs.append(h)
    return np.stack(outs, 1) if return_sequences else h


def ref_gru(x, kernel, rec, bias, units, return_sequences, act):
    n, t, _ = x.shape
    h = np.zeros((n, units))
    outs = []
    for s in range(t):
        xi = x[:, s] @ kernel + bias[0]
        hi = h @ rec + bias[1]
        xz, xr, xh = (xi[:, k * units: (k + 1) * units] for k in range(3))
        hz, hr, hh = (hi[:, k * units: (k + 1) * units] for k in range(3))
        z, r = _sigmoid(xz + hz), _sigmoid(xr + hr)
        cand = ref_activation(xh + r * hh, act)
        h = z * h + (1 - z) * cand
        outs.append(h)
    return np.stack(outs, 1) if return_sequences else h


def ref_layer(layer: Layer, w, x):
    a, k = layer.attrs, layer.kind
    get = lambda p: np.asarray(w[layer.weight_key(p)], np.float64)  # noqa: E731
    bias = lambda: get("bias") if a.get("bias") else None  # noqa: E731
    if k == "Dense":
        y = x @ get("kernel")
        return ref_activation(y + bias() if a["bias"] else y, a["activation"])
    if k == "Conv2D":
        return ref_activation(ref_conv2d(x, get("kernel"), bias(), a["stride"], a["dilation"], a["padding"]),
                              a["activation"])
    if k == "ConvTranspose2D":
        return ref_activation(ref_conv_transpose2d(x, get("kernel"), bias(), a["stride"], a["padding"]),
                              a["activation"])
    if k in ("MaxPool", "AvgPool"):
        return ref_pool(x, a["size"], a["stride"], a["padding"], k[:3].lower())
    if k == "GlobalAvgPool":
        return x.mean(axis=(2, 3))
    if k == "BatchNorm":
        return ref_batch_norm(x, w, layer.name, a["axis"], a["epsilon"])
    if k == "LSTM":
        return ref_lstm(x, get("kernel"), get("recurrent_kernel"), get("bias"), a["units"], a["return_sequences"],
                        a["activation"])
    if k == "GRU":
        return ref_gru(x, get("kernel"), get("recurrent_kernel"), get("bias"), a["units"], a["return_sequences"],
                       a["activation"])
    if k == "Embedding":
        return get("embeddings")[x]
    if k == "Flatten":
        return x.reshape(x.shape[0], -1)
    if k == "Reshape":
        return x.reshape(x.shape[0], *a["shape"])
    if k == "Dropout":
        return x
    if k == "Add":
        return sum(x)
    if k == "Concat":
        return np.concatenate(x, axis=a["axis"] + 1)
    if "activation" in a:  # activation layers
        return ref_activation(x, a["activation"], a.get("alpha", 0.01))
    raise AssertionError(f"no reference for {k}")


def ref_model(model: Model, w, x):
    x = x if model.input_dtype.startswith("int") else np.asarray(x, np.float64)
    values = {INPUT: x}
    for layer in model.layers:
        inputs = [values[name] for name in layer.inputs]
        x = ref_layer(layer, w, inputs if layer.is_merge else inputs[0])
        assert x.shape[1:] == layer.output_shape, (layer.name, x.shape, layer.output_shape)
        values[layer.name] = x
    return x


# ---------------------------------------------------------------- helpers


def chain(in_shape, *specs, input_dtype="float32", name="m"):
    """Model from (kind, kwargs) pairs, names numbered per kind as specc does."""
    layers, counts, shape = [], {}, tuple(in_shape)
    for kind, kwargs in specs:
        counts[kind] = counts.get(kind, 0) + 1
        kwargs = dict(kwargs)
        lname = kwargs.pop("name", f"{LAYERS[kind].snake}_{counts[kind]}")
        layer = make_layer(kind, lname, shape, **kwargs)
        layers.append(layer)
        shape = layer.output_shape
    return Model(name, tuple(in_shape), tuple(layers), input_dtype=input_dtype)


def random_weights(model: Model, seed=0, scale=0.4):
    rng = np.random.default_rng(seed)
    w = {}
    for key, spec in model.weight_specs().items():
        if key.endswith("/moving_variance"):
            w[key] = rng.uniform(0.5, 2.0, spec.shape).astype(np.float32)
        else:
            w[key] = (rng.standard_normal(spec.shape) * scale).astype(np.float32)
    return w


def random_input(model: Model, n=2, seed=1):
    rng = np.random.default_rng(seed)
    if model.input_dtype.startswith("int"):
        vocab = model.layers[0].attrs["vocab"]
        return rng.integers(0, vocab, size=(n, *model.input_shape)).astype(np.int32)
    return rng.standard_normal((n, *model.input_shape)).astype(np.float32)


def check_run(model: Model, seed=0):
    w = random_weights(model, seed)
    x = random_input(model)
    y = P.run(model, w, x)
    assert y.dtype == np.float32
    assert y.shape == (x.shape[0], *model.output_shape)
    np.testing.assert_allclose(y, ref_model(model, w, x), rtol=RTOL, atol=ATOL)


# ---------------------------------------------------------------- cases

CASES = {
    # Dense: every activation, rank > 1 input, no bias
    **{f"dense_{a}": chain((6,), ("Dense", dict(units=5, activation=a))) for a in ACTIVATIONS},
    "dense_rank2_nobias": chain((3, 4), ("Dense", dict(units=5, bias=False))),
    # Conv2D
    "conv_valid": chain((2, 6, 7), ("Conv2D", dict(filters=3, kernel=3))),
    "conv_same_s1": chain((2, 6, 7), ("Conv2D", dict(filters=3, kernel=3, padding="same", activation="relu"))),
    "conv_same_even_k": chain((2, 5, 6), ("Conv2D", dict(filters=3, kernel=2, padding="same"))),
    "conv_stride2_valid": chain((2, 7, 8), ("Conv2D", dict(filters=3, kernel=3, stride=2))),
    "conv_stride2_same_odd": chain((2, 7, 9), ("Conv2D", dict(filters=3, kernel=3, stride=2, padding="same"))),
    "conv_stride2_same_even": chain((2, 8, 6), ("Conv2D", dict(filters=3, kernel=3, stride=2, padding="same"))),
    "conv_stride2_same_k4": chain((1, 7, 7), ("Conv2D", dict(filters=2, kernel=4, stride=2, padding="same"))),
    "conv_dilation": chain((2, 9, 8), ("Conv2D", dict(filters=3, kernel=3, dilation=(2, 1)))),
    "conv_dilation_same": chain((2, 7, 8), ("Conv2D", dict(filters=3, kernel=3, dilation=2, padding="same"))),
    "conv_rect_same": chain((2, 6, 7), ("Conv2D", dict(filters=3, kernel=(2, 3), stride=(1, 2), padding="same"))),
    "conv_explicit_pad": chain((2, 5, 6), ("Conv2D", dict(filters=3, kernel=3, padding=(1, 2), bias=False,
                                                          activation="tanh"))),
    # ConvTranspose2D: k < s, k == s, k > s, valid and same
    **{f"convT_{pad}_k{k}_s{s}": chain((2, 3, 4), ("ConvTranspose2D", dict(filters=3, kernel=k, stride=s, padding=pad)))
       for pad in ("valid", "same") for k, s in ((2, 3), (1, 2), (2, 2), (3, 2), (4, 2), (5, 2), (3, 1), (4, 1))},
    "convT_rect": chain((2, 3, 4), ("ConvTranspose2D", dict(filters=2, kernel=(3, 2), stride=(2, 3), padding="same",
                                                            activation="sigmoid"))),
    "convT_nobias": chain((2, 3, 3), ("ConvTranspose2D", dict(filters=2, kernel=3, stride=2, bias=False))),
    # Pools
    **{f"{kind}_{tag}": chain(shape, (kind, args)) for kind in ("MaxPool", "AvgPool") for tag, shape, args in (
        ("valid2", (2, 6, 7), dict(size=2)),
        ("s2_same_odd", (2, 7, 7), dict(size=3, stride=2, padding="same")),
        ("s2_same_even", (2, 8, 6), dict(size=3, stride=2, padding="same")),
        ("k2_s2_same_odd", (2, 5, 7), dict(size=2, padding="same")),
        ("k2_s1_same", (2, 5, 6), dict(size=2, stride=1, padding="same")),
        ("k3_s1_explicit1", (2, 5, 6), dict(size=3, stride=1, padding=1)),
        ("k3_explicit2", (2, 6, 6), dict(size=3, stride=1, padding=2)),  # 2*pad > size: explicit F.pad
        ("rect_same", (2, 5, 7), dict(size=(2, 3), stride=(1, 2), padding="same")),
    )},
    "global_avg_pool": chain((3, 4, 5), ("GlobalAvgPool", {})),
    # BatchNorm on images, vectors and sequences
    "bn_chw": chain((3, 4, 5), ("BatchNorm", {})),
    "bn_f": chain((5,), ("BatchNorm", dict(epsilon=0.01))),
    "bn_tf": chain((4, 3), ("BatchNorm", {})),
    # Recurrent
    "lstm_last": chain((5, 3), ("LSTM", dict(units=4))),
    "lstm_seq": chain((5, 3), ("LSTM", dict(units=4, return_sequences=True))),
    "lstm_relu": chain((4, 3), ("LSTM", dict(units=3, return_sequences=True, activation="relu"))),
    "gru_last": chain((5, 3), ("GRU", dict(units=4))),
    "gru_seq": chain((5, 3), ("GRU", dict(units=4, return_sequences=True))),
    "gru_elu": chain((4, 3), ("GRU", dict(units=3, activation="elu"))),
    "embedding": chain((6,), ("Embedding", dict(vocab=11, dim=4)), ("LSTM", dict(units=3)), input_dtype="int32"),
    # Shape layers and dropout
    "flatten_dense": chain((2, 3, 4), ("Flatten", {}), ("Dense", dict(units=3))),
    "reshape": chain((12,), ("Reshape", dict(shape=(3, 4))), ("Dense", dict(units=2))),
    "dropout": chain((6,), ("Dropout", dict(rate=0.5)), ("Dense", dict(units=3))),
    # Activation layers
    **{f"act_{k}": chain((2, 3, 4), (k, {})) for k in ("ReLU", "Sigmoid", "Tanh", "Softmax", "GELU", "ELU", "SiLU",
                                                       "LeakyReLU")},
    "act_leaky_0.2": chain((7,), ("LeakyReLU", dict(alpha=0.2))),
    # A small LeNet
    "lenet_small": chain((1, 12, 12),
                         ("Conv2D", dict(filters=4, kernel=5, padding="same", activation="relu")), ("MaxPool", dict(size=2)),
                         ("Conv2D", dict(filters=6, kernel=3, padding="same", activation="relu")), ("MaxPool", dict(size=2)),
                         ("Flatten", {}), ("Dense", dict(units=8, activation="relu")),
                         ("Dense", dict(units=3, activation="softmax"))),
}


def graph_branches() -> Model:
    """Branches that read the model input and one another; a value read by
    three later nodes; an Add of three inputs; the output is a Concat."""
    g = Graph((3, 5, 4))
    a = g("Conv2D", filters=3, kernel=3, padding="same", activation="relu")
    b = g("BatchNorm", INPUT)
    s = g("Add", a, b, INPUT)
    g("Concat", g("AvgPool", s, size=2, stride=1, padding="same"), a, axis=0)  # [6, 5, 4]
    return g.model("branches")


CASES.update(GRAPHS)
CASES["graph_branches"] = graph_branches()


def test_registry_complete():
    assert set(LOWER) == set(LAYERS)
    assert registry.get("torch") is P
    weighted = {layer.kind for m in CASES.values() for layer in m.layers if layer.weights}
    assert weighted == set(convert.RULES)


def test_cases_cover_every_kind():
    kinds = {layer.kind for m in CASES.values() for layer in m.layers}
    assert kinds == set(LAYERS)


@pytest.mark.parametrize("case", sorted(CASES))
def test_run_matches_reference(case):
    check_run(CASES[case])


def test_transpose_crop_matches_keras_sizes():
    for k, s in ((2, 3), (1, 2), (2, 2), (3, 2), (4, 2), (5, 2), (3, 1)):
        for pad in ("valid", "same"):
            layer = make_layer("ConvTranspose2D", "t", (1, 3, 4), filters=1, kernel=k, stride=s, padding=pad)
            assert layer.attrs["padding"] == (_keras_transpose_crop(3, k, s, pad), _keras_transpose_crop(4, k, s, pad))


def test_conv_transpose_generic_crop_path():
    # A crop torch's padding/output_padding cannot express: low crop, long extension.
    base = make_layer("ConvTranspose2D", "t", (2, 3, 3), filters=2, kernel=3, stride=2)
    crop = ((2, -3), (1, -4))
    out = (2, (3 - 1) * 2 + 3 - 2 + 3, (3 - 1) * 2 + 3 - 1 + 4)
    layer = Layer("t", "ConvTranspose2D", {**base.attrs, "padding": crop}, base.input_shape, out, base.weights)
    model = Model("m", (2, 3, 3), (layer,))
    assert P.build(model, random_weights(model)).t.post_pad is not None
    check_run(model)


# ---------------------------------------------------------------- conversion and counts

ONE_PER_KIND = {}
for _name, _model in sorted(CASES.items()):
    ONE_PER_KIND.setdefault(_model.layers[0].kind, _model)


@pytest.mark.parametrize("kind", sorted(ONE_PER_KIND))
def test_round_trip_exact(kind):
    model = ONE_PER_KIND[kind]
    w = random_weights(model, seed=3)
    native = P.to_native(model, w)
    net = P.build(model, w)
    assert set(native) == set(net.state_dict())
    for source in (native, net):
        back = P.from_native(model, source)
        assert set(back) == set(w)
        for key in w:
            assert back[key].dtype == np.float32 and back[key].shape == w[key].shape
            assert np.array_equal(back[key], w[key]), key


@pytest.mark.parametrize("case", sorted(CASES))
def test_param_count_matches_ir(case):
    model = CASES[case]
    net = P.build(model)
    trainable = sum(p.numel() for p in net.parameters() if p.requires_grad)
    assert trainable == sum(layer.trainable_params for layer in model.layers)
    # state_dict: parameters plus persistent buffers (BatchNorm's moving stats), nothing else
    assert sum(t.numel() for t in net.state_dict().values()) == model.params


def test_native_layouts():
    m = chain((3, 5, 5), ("Conv2D", dict(filters=4, kernel=(2, 3))), ("ConvTranspose2D", dict(filters=2, kernel=3)),
              ("Flatten", {}), ("Dense", dict(units=6)))
    sd = P.build(m).state_dict()
    assert tuple(sd["conv2d_1.weight"].shape) == (4, 3, 2, 3)
    assert tuple(sd["conv_transpose2d_1.weight"].shape) == (4, 2, 3, 3)
    assert tuple(sd["dense_1.weight"].shape) == (6, m.layers[2].output_shape[0])
    lstm = chain((5, 3), ("LSTM", dict(units=4)))
    sd = P.build(lstm).state_dict()
    assert set(sd) == {"lstm_1.weight_ih_l0", "lstm_1.weight_hh_l0", "lstm_1.bias_ih_l0"}
    assert torch.count_nonzero(P.build(lstm).lstm_1.bias_hh_l0) == 0


def test_build_uses_canonical_init_and_layer_names():
    m = CASES["lenet_small"]
    net = P.build(m, seed=5)
    assert [n for n, _ in net.named_children()] == [layer.name for layer in m.layers]
    back = P.from_native(m, net)
    init = specc.init_weights(m, seed=5)
    assert all(np.array_equal(back[k], init[k]) for k in init)


def test_reserved_layer_names():
    m = chain((4,), ("Dense", dict(units=3, name="train")), ("Dense", dict(units=2, name="forward")))
    net = P.build(m)
    assert net.module_names == {"train": "train_", "forward": "forward_"}
    check_run(m)
    w = random_weights(m)
    assert all(np.array_equal(P.from_native(m, P.to_native(m, w))[k], w[k]) for k in w)


def test_specc_run_and_input_checks():
    m = CASES["lenet_small"]
    w = random_weights(m)
    x = random_input(m)
    y = specc.run(m, w, x, backend="torch")
    np.testing.assert_allclose(y, ref_model(m, w, x), rtol=RTOL, atol=ATOL)
    np.testing.assert_array_equal(y, P.run(m, w, x))  # the same backend, not another one's round-off
    with pytest.raises(ValueError, match="batch of shape"):
        P.run(m, w, x[0])


# ---------------------------------------------------------------- gradients


def _fd_gradients(model, w, x, target, eps=1e-6):
    w64 = {k: v.astype(np.float64) for k, v in w.items()}
    loss = lambda: float(np.mean((ref_model(model, w64, x) - target) ** 2))  # noqa: E731
    grads = {}
    for key, spec in model.weight_specs().items():
        if not spec.trainable:
            continue
        g = np.zeros(spec.shape)
        flat, gflat = w64[key].reshape(-1), g.reshape(-1)
        for i in range(flat.size):
            old = flat[i]
            flat[i] = old + eps
            up = loss()
            flat[i] = old - eps
            down = loss()
            flat[i] = old
            gflat[i] = (up - down) / (2 * eps)
        grads[key] = g
    return loss(), grads


GRAD_MODELS = {
    "conv_bn_pool_dense": chain((2, 5, 6),
                                ("Conv2D", dict(filters=3, kernel=3, stride=2, padding="same", activation="tanh")),
                                ("BatchNorm", {}), ("AvgPool", dict(size=2, stride=1, padding="same")),
                                ("Flatten", {}), ("Dropout", dict(rate=0.5)), ("Dense", dict(units=3))),
    "convT_maxpool": chain((2, 3, 3), ("ConvTranspose2D", dict(filters=2, kernel=3, stride=2, padding="same")),
                           ("MaxPool", dict(size=3, stride=2, padding="same")), ("GlobalAvgPool", {}),
                           ("Dense", dict(units=2, activation="sigmoid"))),
    "embed_gru_lstm": chain((4,), ("Embedding", dict(vocab=7, dim=3)),
                            ("GRU", dict(units=3, return_sequences=True)), ("BatchNorm", {}),
                            ("LSTM", dict(units=2)), ("Dense", dict(units=2)), input_dtype="int32"),
    "graph": graph_small(),
}


@pytest.mark.parametrize("case", sorted(GRAD_MODELS))
def test_gradients_match_finite_differences(case):
    model = GRAD_MODELS[case]
    w = random_weights(model, seed=7, scale=0.6)
    x = random_input(model, n=3, seed=8)
    target = np.random.default_rng(9).standard_normal((3, *model.output_shape)).astype(np.float32)
    loss, grads = P.gradients(model, w, x, target)
    ref_loss, ref_grads = _fd_gradients(model, w, x, target)
    assert isinstance(loss, float)
    assert loss == pytest.approx(ref_loss, rel=1e-5)
    trainable = {k for k, s in model.weight_specs().items() if s.trainable}
    assert set(grads) == trainable
    scale = max(np.abs(g).max() for g in ref_grads.values())
    for key in trainable:
        assert grads[key].dtype == np.float32 and grads[key].shape == ref_grads[key].shape
        np.testing.assert_allclose(grads[key], ref_grads[key], rtol=1e-3, atol=1e-4 * scale, err_msg=key)


def test_gradients_unknown_loss():
    m = CASES["dense_relu"]
    with pytest.raises(ValueError, match="mse"):
        P.gradients(m, random_weights(m), random_input(m), np.zeros((2, 5)), loss="hinge")


# ---------------------------------------------------------------- training mode


@pytest.mark.parametrize("case", ["bn_chw", "bn_f", "bn_tf"])
def test_forward_train_updates_bn_stats_keras_formula(case):
    model = CASES[case]
    layer = model.layers[0]
    axis, eps, m = layer.attrs["axis"], layer.attrs["epsilon"], layer.attrs["momentum"]
    w = random_weights(model, seed=2)
    x = random_input(model, n=4, seed=3) * 2 + 0.5
    before = {k: v.copy() for k, v in w.items()}
    y, new = P.forward_train(model, w, x)
    reduce = tuple(i for i in range(x.ndim) if i != axis + 1)
    x64 = x.astype(np.float64)
    mean, var = x64.mean(axis=reduce), x64.var(axis=reduce)  # biased, as Keras
    name = layer.name
    np.testing.assert_allclose(new[f"{name}/moving_mean"], w[f"{name}/moving_mean"] * m + mean * (1 - m),
                               rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(new[f"{name}/moving_variance"], w[f"{name}/moving_variance"] * m + var * (1 - m),
                               rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(y, ref_batch_norm(x64, w, name, axis, eps, mean, var), rtol=1e-4, atol=1e-5)
    for key in (f"{name}/gamma", f"{name}/beta"):
        assert np.array_equal(new[key], w[key])
    # the weights passed in are left alone
    assert all(np.array_equal(w[k], before[k]) for k in w)


def test_forward_train_bn_single_value_per_feature():
    model = CASES["bn_f"]
    w = random_weights(model)
    y, _ = P.forward_train(model, w, random_input(model, n=1))
    np.testing.assert_allclose(y[0], w["batch_norm_1/beta"], atol=1e-6)


def test_forward_train_dropout_seeded():
    model = chain((200,), ("Dropout", dict(rate=0.5)))
    x = np.ones((2, 200), np.float32)
    y1, w1 = P.forward_train(model, {}, x, seed=1)
    y2, _ = P.forward_train(model, {}, x, seed=1)
    y3, _ = P.forward_train(model, {}, x, seed=2)
    assert w1 == {}
    np.testing.assert_array_equal(y1, y2)
    assert not np.array_equal(y1, y3)
    assert set(np.unique(y1)) == {0.0, 2.0}
    np.testing.assert_array_equal(P.run(model, {}, x), x)


def test_net_deepcopy_and_dtype_moves():
    import copy

    m = CASES["embedding"]
    w = random_weights(m)
    net = P.build(m, w).eval()
    twin = copy.deepcopy(net)
    assert twin.specc_model is m
    x = torch.from_numpy(random_input(m).astype(np.int64))
    with torch.no_grad():
        torch.testing.assert_close(twin(x), net(x), rtol=0, atol=0)
        torch.testing.assert_close(twin.double()(x).float(), net(x), rtol=1e-6, atol=1e-6)
