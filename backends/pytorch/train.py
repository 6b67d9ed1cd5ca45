"""The PyTorch trainer of the supervised and autoencoder recipes: train and eval steps of one plan.

The runner owns the loop; this object owns the device side of it. A split is
moved to the device once (`put`), each epoch's sample order once
(`begin_epoch`), and each step gathers its batch there with index_select. A
step never waits for the device: its loss and hit count go into per-epoch
device buffers that `pull` reduces with one transfer, which also finds the
first step whose loss was not finite.

The train forward runs on logits when the plan fuses the loss with the final
softmax/sigmoid: that activation is left out of this trainer's network (the
canonical weights are unaffected), and evaluation uses the same network and
loss. Dropout masks come from specc.noise at (seed, layer, global step,
sample), so a resumed run repeats the uninterrupted run's masks exactly and
they do not depend on the number of devices.

On several devices (`world`, one process each: parallel.py) each rank takes
its rows of the same global batch, its loss weighted by its share under DDP;
`pull` and `evaluate` add up the ranks' sums.

An autoencoder's plan (`plan.reconstruct`) puts only the inputs: the target
is the clean batch, and the model sees it with Gaussian noise of
`plan.input_noise` drawn on the device from specc.noise at the optimiser step
(evaluation: at each sample's index), the numbers the JAX trainer draws.

Speed settings (`plan.speed`, speed.py) are applied before the optimiser is
made: channels_last puts the convolutions' weights and the stored image
splits in channels-last memory (batches are gathered keeping it), and
`--compile` runs full training batches through torch.compile, on one device
only (with DDP the step runs eagerly; `describe_speed` says so). Both change
results by float rounding at most.

Precision (`plan.precision`): "f32" runs everything in float32 as before;
"mixed" runs the train and eval forwards under torch.autocast to bfloat16
(matmuls and convolutions in bf16, and their backward), while parameters,
gradients, optimiser state and BatchNorm statistics stay float32 and the
loss is computed on the output cast to float32.
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from typing import Callable, ContextManager, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from specc.backend import BackendError
from specc.catalogue import ACTIVATION_LAYERS
from specc.distributed import SINGLE, World
from specc.ir import Model
from specc.noise import STREAM_INPUT_NOISE
from specc.plan import EVAL_NOISE_STREAM, Plan, learning_rate

from . import convert, parallel
from .layers import Net, build_net
from .noise import gaussian
from .optim import canonical_state, make_update, restore_state
from .parallel import SeededDropout  # noqa: F401 - the trainer's dropout, named here since before
from .speed import Speed, SpeedOptions

EPSILON = 1e-7  # Keras's backend epsilon: probabilities are clipped to [eps, 1 - eps]


def device_of(device: str) -> torch.device:
    if device == "cpu":
        return torch.device("cpu")
    if device in ("gpu", "cuda"):
        if not torch.cuda.is_available():
            raise BackendError(f"no GPU is visible to torch {torch.__version__} (a CPU build, or no CUDA driver); "
                               "use --device cpu")
        return torch.device("cuda")
    raise BackendError(f"unknown device '{device}' for the torch backend; use cpu or gpu")


def _strip_final_activation(net: Net, model: Model) -> None:
    i = model.final_activation_index()
    name = list(net._modules)[i]
    module = net._modules[name]
    if model.layers[i].kind in ACTIVATION_LAYERS:
        net._modules[name] = nn.Identity()
    elif hasattr(module, "act"):
        module.act = None
    else:  # Model.final_activation names an activation this layer cannot hold
        raise AssertionError(f"cannot leave out the final activation of {model.layers[i].name}")


def precision_context(device: torch.device, precision: str) -> Callable[[], ContextManager]:
    """A factory of the context a forward runs in for `precision` (specc.plan.PRECISIONS):
    nothing for "f32"; torch.autocast to bfloat16 on `device` for "mixed"
    (parameters stay float32: autocast casts them for each matmul or
    convolution, and their gradients come back in float32)."""
    if precision == "f32":
        return nullcontext
    if precision == "mixed":
        return lambda: torch.autocast(device.type, dtype=torch.bfloat16)
    raise BackendError(f"the torch backend has no precision '{precision}'; use f32 or mixed")


def _float_input(module: nn.Module, args: tuple) -> tuple:
    return (args[0].float(), *args[1:])


def f32_batch_norm(net: nn.Module) -> None:
    """Under mixed precision, BatchNorm normalises and keeps its statistics in
    float32 (its input cast up; autocast would leave it in bf16): the next
    matmul or convolution takes its output back to bf16."""
    from .modules import BatchNorm

    for module in net.modules():
        if isinstance(module, BatchNorm):
            module.register_forward_pre_hook(_float_input)


def make_speed(net: nn.Module, plan: Plan, world: World, eager: str | None = None) -> Speed:
    """The plan's speed settings applied to `net` (call it before the
    optimiser is made and before DDP wraps the net). `eager` says why the
    caller's step never compiles; torch.compile is not combined with DDP
    either: a data-parallel step runs eagerly."""
    choices = plan.speed
    if world.parallel and eager is None:
        eager = "not combined with data parallelism: DDP steps run eagerly"
    compile_ = choices.compile and eager is None
    speed = Speed(net, SpeedOptions(channels_last=choices.channels_last, compile=compile_), plan.batch)
    if choices.compile and eager is not None:
        speed.compile_reason = f"off ({eager})"
    return speed


class Split:
    """A data split on the device."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor | None):
        self.x, self.y = x, y

    def __len__(self) -> int:
        return self.x.shape[0]


class Trainer:
    """specc.recipes.supervised's Trainer protocol for one model and plan on one device."""

    def __init__(self, model: Model, plan: Plan, weights: Mapping[str, np.ndarray], device: str = "cpu",
                 world: World = SINGLE):
        self.model, self.plan, self.world = model, plan, world
        self.device = device_of(device)
        net = build_net(model)
        net.load_state_dict(convert.to_native(model, weights), strict=True)
        self.clock = parallel.DropoutClock(plan.seed, plan.batch, self.device)
        parallel.seeded_dropout(net, self.clock)
        parallel.global_batch_norm(net, world)
        if plan.fused:
            _strip_final_activation(net, model)
        self.net = net.to(self.device).train()  # the module itself: weights, evaluation
        self.speed = make_speed(self.net, plan, world)  # before DDP and the optimiser: channels_last moves weights
        self.autocast = precision_context(self.device, plan.precision)
        if plan.precision != "f32":
            f32_batch_norm(self.net)
        self.forward = parallel.data_parallel(self.net, world)  # the module or its DDP
        # what a train step calls: the (compiled, on one device) forward of full batches, or DDP's
        self._train_forward = self.forward if self.forward is not self.net else self.speed.forward
        self.logits = plan.logits
        self.named_params = [(n, p) for n, p in self.net.named_parameters() if p.requires_grad]
        self.params = [p for _, p in self.named_params]
        self.update = make_update(plan.optimizer.name, dict(plan.optimizer.args), self.params)
        self.optimizer = self.update.optimizer
        self.updates = 0  # optimiser steps applied (Adam's t - 1)
        self._loss_fn = self._make_loss()
        self._hits_fn = self._make_hits()
        # Per-epoch step buffers: loss and hit count of each step, reduced by pull().
        spe = plan.steps_per_epoch
        self._losses = torch.zeros(spe, dtype=torch.float32, device=self.device)
        self._hits = torch.zeros(spe, dtype=torch.float32, device=self.device)
        self._sizes: torch.Tensor | None = None  # samples in each step of an epoch, on the device
        self._sizes_host: list[int] = []  # the global batches' sizes
        self._rows: list[tuple[int, int]] = []  # this rank's rows [lo, hi) of each
        self._sizes_n = -1  # the epoch length they were made for
        self._carry = torch.zeros(4, dtype=torch.float64, device=self.device)  # see _window
        self._carry_samples = 0
        self._data: Split | None = None
        self._order: torch.Tensor | None = None
        self._epoch = 0
        self._first = 0  # first step of the epoch not yet pulled
        self._next = 0  # next step index of the epoch

    # ------------------------------------------------------------ data

    def put(self, x: np.ndarray, y: np.ndarray | None) -> Split:
        x = np.asarray(x)
        if self.model.input_dtype.startswith("int"):
            xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.int64))
        else:
            xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        yt = None
        if y is not None:
            y = np.asarray(y)
            if self.plan.loss == "cross_entropy":
                yt = torch.from_numpy(np.ascontiguousarray(y, dtype=np.int64))
            else:
                y = np.ascontiguousarray(y, dtype=np.float32)
                shape = (len(y), *self.model.output_shape)
                if y.shape != shape and y.size == math.prod(shape):
                    y = y.reshape(shape)
                yt = torch.from_numpy(y)
            yt = yt.to(self.device)
        return Split(self.speed.data(xt.to(self.device)), yt)

    def begin_epoch(self, data: Split, order: np.ndarray, epoch: int) -> None:
        self._fold()  # steps of a previous epoch that were never pulled
        self._data = data
        self._order = torch.from_numpy(np.ascontiguousarray(order, dtype=np.int64)).to(self.device)
        self._epoch = epoch
        self._first = self._next = 0
        if self._sizes_n != len(order):
            b, n = self.plan.batch, len(order)
            sizes = [min(b, n - i * b) for i in range(self.plan.steps_per_epoch)]
            self._rows = parallel.rows(sizes, self.world)
            self._sizes = torch.tensor([hi - lo for lo, hi in self._rows], dtype=torch.float64, device=self.device)
            self._sizes_host, self._sizes_n = sizes, n

    # ------------------------------------------------------------ losses and hits

    def _make_loss(self):
        loss, logits = self.plan.loss, self.logits
        if loss == "cross_entropy":
            if logits:
                def fn(out, y):
                    return F.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1))
            else:
                def fn(out, y):  # Keras: normalise, clip, -log p[y]
                    p = (out / out.sum(-1, keepdim=True)).clamp(EPSILON, 1.0 - EPSILON)
                    return -torch.log(p).gather(-1, y.unsqueeze(-1)).mean()
        elif loss == "binary_cross_entropy":
            if logits:
                fn = F.binary_cross_entropy_with_logits
            else:
                def fn(out, y):
                    p = out.clamp(EPSILON, 1.0 - EPSILON)
                    return -(y * torch.log(p) + (1.0 - y) * torch.log(1.0 - p)).mean()
        elif loss == "mse":
            fn = F.mse_loss
        elif loss == "mae":
            fn = F.l1_loss
        else:
            raise ValueError(f"the torch backend has no loss '{loss}'")
        return fn

    def _make_hits(self):
        """fn(out, y) -> the number of correct samples (a device scalar), or None."""
        kind = self.plan.accuracy
        if kind is None:
            return None
        threshold = 0.0 if self.logits else 0.5

        def count(h):
            return h.sum() if h.dim() == 1 else h.float().flatten(1).mean(1).sum()

        if kind == "categorical":
            return lambda out, y: count(out.argmax(-1) == y)
        if kind == "binary":
            return lambda out, y: count((out > threshold) == (y > 0.5))
        if kind == "onehot":
            return lambda out, y: count(out.argmax(-1) == y.argmax(-1))
        raise ValueError(f"unknown accuracy kind '{kind}'")

    # ------------------------------------------------------------ training

    def step(self, i: int) -> None:
        b, (lo, hi) = self.plan.batch, self._rows[i]
        idx = self._order[i * b + lo:i * b + hi]  # this rank's rows of global batch i
        data = self._data
        self.clock.at(self._epoch * self.plan.steps_per_epoch + i, lo, hi)
        xb = self.speed.gather(data.x, idx)
        if self.plan.reconstruct:  # the target is the clean input; the model sees it noisy
            yb = xb
            if self.plan.input_noise:
                noise = gaussian(self.plan.seed, STREAM_INPUT_NOISE, self.updates, (hi, *xb.shape[1:]), self.device)
                xb = xb + self.plan.input_noise * noise[lo:]  # rows lo..hi of the global batch's noise
        else:
            yb = data.y.index_select(0, idx)
        with self.autocast():
            out = self._train_forward(xb)
        out = out.float()  # the loss in float32 (a no-op in f32)
        loss = self._loss_fn(out, yb) if hi > lo else out.sum() * 0.0  # no rows here: DDP still needs gradients
        self.optimizer.zero_grad(set_to_none=True)
        (loss * parallel.share(hi - lo, self._sizes_host[i], self.world)).backward()
        self.update.prepare(learning_rate(self.plan, self._epoch * self.plan.steps_per_epoch + i), self.updates + 1)
        self.optimizer.step()
        self.updates += 1
        self._losses[i] = loss.detach()
        if self._hits_fn is not None:
            with torch.no_grad():
                self._hits[i] = self._hits_fn(out, yb)
        self._next = i + 1

    def _window(self) -> tuple[torch.Tensor, int]:
        """The unpulled steps of this epoch, reduced on the device to
        [loss sum, hits, first non-finite global step + 1 (0: none), its loss],
        and their number of samples."""
        a, e = self._first, self._next
        losses = self._losses[a:e]
        bad = ~torch.isfinite(losses)
        first = bad.int().argmax()
        any_bad = bad.any()
        step = torch.where(any_bad, first + (a + 1 + self._epoch * self.plan.steps_per_epoch), 0)
        window = torch.stack([(losses.double() * self._sizes[a:e]).sum(), self._hits[a:e].double().sum(),
                              step.double(), losses[first].double()])
        return window, sum(self._sizes_host[a:e])

    def _fold(self) -> None:
        """Add the unpulled steps to the running totals (device only, no sync)."""
        if self._data is None or self._next <= self._first:
            return
        window, n = self._window()
        earlier = self._carry[2] > 0  # keep the first bad step of all
        self._carry = torch.cat([self._carry[:2] + window[:2],
                                 torch.where(earlier, self._carry[2:], window[2:])])
        self._carry_samples += n
        self._first = self._next

    def pull(self) -> dict:
        self._fold()
        carry = parallel.reduce_window(self.world, self._carry)
        (loss_sum, hits, bad, bad_loss), n = carry.tolist(), self._carry_samples  # the one sync
        self._carry = torch.zeros(4, dtype=torch.float64, device=self.device)
        self._carry_samples = 0
        samples = max(n, 1)
        return {
            "loss": loss_sum / samples,
            "accuracy": hits / samples if self._hits_fn is not None else None,
            "samples": n,
            "bad_step": int(bad) - 1,
            "bad_value": None if not bad else ("nan" if math.isnan(bad_loss) else "inf" if bad_loss > 0 else "-inf"),
        }

    # ------------------------------------------------------------ evaluation

    def evaluate(self, data: Split, batch: int) -> dict:
        net = self.net
        net.eval()
        total = torch.zeros(2, dtype=torch.float64, device=self.device)
        n = len(data)
        (lo, hi), = parallel.rows([n], self.world)  # each rank evaluates its part
        try:
            with torch.inference_mode():
                for s in range(lo, hi, batch):
                    xb, yb = self._eval_batch(data, s, min(batch, hi - s))
                    with self.autocast():
                        out = net(xb)
                    out = out.float()
                    total[0] += self._loss_fn(out, yb).double() * xb.shape[0]
                    if self._hits_fn is not None:
                        total[1] += self._hits_fn(out, yb).double()
            loss, hits = parallel.all_sum(self.world, total).tolist()
        finally:
            net.train()
        n = max(n, 1)
        return {"loss": loss / n, "accuracy": hits / n if self._hits_fn is not None else None}

    def _eval_batch(self, data: Split, start: int, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        xb = data.x[start:start + batch]
        if not self.plan.reconstruct:
            return xb, data.y[start:start + batch]
        if not self.plan.input_noise:
            return xb, xb
        steps = torch.arange(start, start + xb.shape[0], device=self.device)  # sample j draws at step j
        noise = gaussian(self.plan.seed, EVAL_NOISE_STREAM, steps, xb.shape[1:], self.device)
        return xb + self.plan.input_noise * noise, xb

    # ------------------------------------------------------------ settings

    def describe_speed(self) -> str:
        """The speed and precision settings in effect, in words."""
        return f"{self.speed.describe()}, precision {self.plan.precision}"

    # ------------------------------------------------------------ weights and optimiser state

    def get_weights(self) -> dict[str, np.ndarray]:
        return convert.from_native(self.model, self.net)

    def set_weights(self, weights: Mapping[str, np.ndarray]) -> None:
        with torch.no_grad():
            self.net.load_state_dict(convert.to_native(self.model, weights), strict=True)

    def get_optimizer_state(self) -> dict[str, np.ndarray]:
        """Canonical state (specc.plan.optimizer_state_shapes), converted from
        the native layout like the weights."""
        return canonical_state(self.model, self.plan.optimizer, self.optimizer, self.named_params, self.updates)

    def set_optimizer_state(self, state: Mapping[str, np.ndarray]) -> None:
        self.updates = restore_state(self.model, self.plan.optimizer, self.optimizer, self.named_params, state)
        match_layout(self.optimizer, self.params)


def match_layout(optimizer: torch.optim.Optimizer, params: list[torch.Tensor]) -> None:
    """Restored optimiser state in each parameter's memory format (channels-last
    weights get channels-last slots), as state made by the optimiser itself is,
    so that the foreach updates keep their fast path."""
    for p in params:
        state = optimizer.state.get(p, {})
        for name, value in state.items():
            if isinstance(value, torch.Tensor) and value.shape == p.shape and value.stride() != p.stride():
                state[name] = torch.empty_like(p).copy_(value)
