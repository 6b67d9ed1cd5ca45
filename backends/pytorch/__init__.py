"""The PyTorch backend: IR -> torch.nn.Module, canonical weights <-> torch.

The backend module API of specc.backend: build, to_native, from_native, run,
forward_train, gradients, trainer. Everything runs in float32;
inputs and outputs are numpy, channels-first, with a leading batch axis.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import torch

from specc.ir import Model
from specc.weights import check_weights, init_weights

from . import convert
from .convert import from_native as _from_native, to_native as _to_native
from .launch import launch
from .layers import LOWER, Net, build_net, module_names
from .parallel import start_world

__all__ = ["LOWER", "Net", "build", "forward_train", "from_native", "gan_trainer", "gradients", "launch",
           "module_names", "run", "start_world", "to_native", "trainer"]

LOSSES = ("mse", "mae")
PRECISIONS = ("f32", "mixed")  # --precision: mixed is bf16 compute under autocast (train.py)


def build(model: Model, weights: Mapping[str, np.ndarray] | None = None, seed: int = 0) -> Net:
    """The torch.nn.Module for `model`, holding `weights` (canonical), or the
    canonical initial weights for `seed` when none are given."""
    net = build_net(model)
    load(net, model, init_weights(model, seed) if weights is None else weights)
    return net


def load(net: torch.nn.Module, model: Model, weights: Mapping[str, np.ndarray]) -> None:
    """Copy canonical weights into a built net (exact)."""
    check_weights(model, weights)
    net.load_state_dict(_to_native(model, weights), strict=True)


def to_native(model: Model, weights: Mapping[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """Canonical weights -> the built net's state_dict (float32 tensors)."""
    check_weights(model, weights)
    return _to_native(model, weights)


def from_native(model: Model, native) -> dict[str, np.ndarray]:
    """A built net, or its state_dict, -> canonical weights (exact)."""
    return _from_native(model, native)


def _input(model: Model, x) -> torch.Tensor:
    x = np.asarray(x)
    if tuple(x.shape[1:]) != model.input_shape:
        raise ValueError(f"model {model.name} takes a batch of shape [N, {', '.join(map(str, model.input_shape))}], "
                         f"got {list(x.shape)}")
    if model.input_dtype.startswith("int"):
        if not np.issubdtype(x.dtype, np.integer):
            raise ValueError(f"model {model.name} takes integer token ids, got {x.dtype}")
        return torch.from_numpy(np.ascontiguousarray(x, dtype=np.int64))
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))


def _output(y: torch.Tensor) -> np.ndarray:
    return np.array(y.detach().cpu().numpy(), dtype=np.float32, order="C")  # C order: safetensors writes raw memory


def run(model: Model, weights: Mapping[str, np.ndarray], x) -> np.ndarray:
    """Inference-mode forward pass (dropout off, BatchNorm on moving stats)."""
    net = build(model, weights).eval()
    with torch.inference_mode():
        return _output(net(_input(model, x)))


def forward_train(model: Model, weights: Mapping[str, np.ndarray], x, seed: int = 0):
    """Training-mode forward pass: dropout on (torch RNG seeded with `seed`,
    without touching the global generator), BatchNorm on batch statistics.
    Returns (y, weights) with the BatchNorm moving statistics updated."""
    net = build(model, weights).train()
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed)
        y = net(_input(model, x))
    new = {k: np.array(v, dtype=np.float32) for k, v in weights.items()}
    new.update(from_native(model, net))
    return _output(y), new


def _loss(y: torch.Tensor, target: torch.Tensor, loss: str) -> torch.Tensor:
    if loss == "mse":
        return torch.mean((y - target) ** 2)
    if loss == "mae":
        return torch.mean(torch.abs(y - target))
    raise ValueError(f"gradients supports the losses {', '.join(LOSSES)}, not '{loss}'")


def gradients(model: Model, weights: Mapping[str, np.ndarray], x, target, loss: str = "mse"):
    """(loss value, canonical-layout gradients of every trainable weight), with
    an inference-mode forward pass (dropout off, BatchNorm on moving stats)."""
    net = build(model, weights).eval()
    y = net(_input(model, x))
    value = _loss(y, torch.as_tensor(np.asarray(target, dtype=np.float32)), loss)
    if value.requires_grad:  # a model with no trainable weight has no gradient
        value.backward()
    grads_native = {name: p.grad if p.grad is not None else torch.zeros_like(p)
                    for name, p in net.named_parameters()}
    trainable = {k for k, w in model.weight_specs().items() if w.trainable}
    grads = convert.from_native(model, grads_native, only=trainable)
    return float(value.detach()), grads


# ---------------------------------------------------------------- trainer


def trainer(model: Model, plan, weights: Mapping[str, np.ndarray], device: str = "cpu", world=None):
    """The compiled train and eval steps of `plan` for specc.runner (a
    specc.runner.Trainer), starting from canonical `weights`; device "cpu" or
    "gpu"; `world` (start_world's) for data parallelism."""
    from specc.distributed import SINGLE

    from .train import Trainer

    return Trainer(model, plan, weights, device=device, world=world or SINGLE)


def gan_trainer(generator: Model, discriminator: Model, plan, g_weights, d_weights, latent: int,
                device: str = "cpu", world=None):
    """The GAN recipe's trainer: the DCGAN D-then-G step on two modules (see `gan`)."""
    from specc.distributed import SINGLE

    from .gan import GanTrainer

    return GanTrainer(generator, discriminator, plan, g_weights, d_weights, latent, device=device,
                      world=world or SINGLE)
