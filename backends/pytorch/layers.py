"""IR layer -> torch.nn.Module, one small lowering function per layer kind.

`LOWER` is the one explicit table (sqlglot's TRANSFORMS), keyed by the
catalogue's spelling of each kind, merges (Add, Concat) included. The modules
are in modules.py and recurrent.py (what each does where torch's meaning
differs from the contract's); net.py runs them as one network.
"""

from __future__ import annotations

from typing import Callable

from torch import nn

from specc.catalogue import ACTIVATION_LAYERS
from specc.ir import Layer

from .modules import (Activation, Add, AvgPool, BatchNorm, Concat, Conv2D, ConvTranspose2D, Dense, Embedding,
                      GlobalAvgPool, MaxPool, Reshape)
from .net import Net, build_net, module_names
from .recurrent import GRU, LSTM

__all__ = ["LOWER", "Net", "build_net", "lower", "module_names"]


# ---------------------------------------------------------------- lowering


def lower_dense(layer: Layer) -> nn.Module:
    a = layer.attrs
    return Dense(layer.input_shape[-1], a["units"], a["bias"], a["activation"])


def lower_conv2d(layer: Layer) -> nn.Module:
    a = layer.attrs
    return Conv2D(layer.input_shape[0], a["filters"], a["kernel"], a["stride"], a["dilation"],
                  a["padding"], a["bias"], a["activation"])


def lower_conv_transpose2d(layer: Layer) -> nn.Module:
    a = layer.attrs
    return ConvTranspose2D(layer.input_shape[0], a["filters"], a["kernel"], a["stride"], a["padding"],
                           a["bias"], a["activation"])


def lower_max_pool(layer: Layer) -> nn.Module:
    a = layer.attrs
    return MaxPool(a["size"], a["stride"], a["padding"])


def lower_avg_pool(layer: Layer) -> nn.Module:
    a = layer.attrs
    return AvgPool(a["size"], a["stride"], a["padding"], layer.input_shape[1:])


def lower_global_avg_pool(layer: Layer) -> nn.Module:
    return GlobalAvgPool()


def lower_batch_norm(layer: Layer) -> nn.Module:
    a = layer.attrs
    return BatchNorm(layer.input_shape[a["axis"]], a["momentum"], a["epsilon"], a["axis"], len(layer.input_shape))


def lower_lstm(layer: Layer) -> nn.Module:
    a = layer.attrs
    return LSTM(layer.input_shape[-1], a["units"], a["return_sequences"], a["activation"])


def lower_gru(layer: Layer) -> nn.Module:
    a = layer.attrs
    return GRU(layer.input_shape[-1], a["units"], a["return_sequences"], a["activation"])


def lower_embedding(layer: Layer) -> nn.Module:
    return Embedding(layer.attrs["vocab"], layer.attrs["dim"])


def lower_flatten(layer: Layer) -> nn.Module:
    return nn.Flatten()


def lower_reshape(layer: Layer) -> nn.Module:
    return Reshape(layer.attrs["shape"])


def lower_dropout(layer: Layer) -> nn.Module:
    return nn.Dropout(layer.attrs["rate"])


def lower_activation(layer: Layer) -> nn.Module:
    """ReLU, Sigmoid, Tanh, Softmax, GELU, ELU, SiLU, LeakyReLU: the same
    functions as `activation=` on Dense and convolutions."""
    return Activation(layer.attrs["activation"], layer.attrs.get("alpha"))


def lower_add(layer: Layer) -> nn.Module:
    return Add()


def lower_concat(layer: Layer) -> nn.Module:
    return Concat(layer.attrs["axis"])


LOWER: dict[str, Callable[[Layer], nn.Module]] = {
    "Dense": lower_dense,
    "Conv2D": lower_conv2d,
    "ConvTranspose2D": lower_conv_transpose2d,
    "MaxPool": lower_max_pool,
    "AvgPool": lower_avg_pool,
    "GlobalAvgPool": lower_global_avg_pool,
    "BatchNorm": lower_batch_norm,
    "LSTM": lower_lstm,
    "GRU": lower_gru,
    "Embedding": lower_embedding,
    "Flatten": lower_flatten,
    "Reshape": lower_reshape,
    "Dropout": lower_dropout,
    "Add": lower_add,
    "Concat": lower_concat,
    **{kind: lower_activation for kind in ACTIVATION_LAYERS},
}


def lower(layer: Layer) -> nn.Module:
    try:
        fn = LOWER[layer.kind]
    except KeyError:
        raise ValueError(f"the torch backend cannot lower layer kind {layer.kind} ({layer.name})") from None
    return fn(layer)
