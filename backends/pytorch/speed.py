"""Speed options of the PyTorch backend, for the trainer to apply.

Each option keeps results the same up to float rounding (tests/test_speed_settings.py
checks a few training steps with and without against the existing tolerances)
and can be turned off.

- `channels_last(net)`: 4-D weights (convolutions) in channels-last memory
  format, so oneDNN runs the convolutions without reordering. Inputs must
  then be channels-last too: keep the image split in that format once
  (`channels_last_data`) and gather batches with `x[idx]`, which keeps the
  format (`index_select` returns a contiguous NCHW batch, and each conv
  would reorder it back). Nothing changes for a model without 4-D weights.
  BatchNorm's training step on a channels-last batch runs through
  modules.ChannelsLastBatchNorm: torch's own channels-last CPU kernels sum
  each channel in float32 row by row (1e-5 to 1e-4 off, and different with
  two threads), which made three MNIST steps of a residual network end 7e-2
  apart from NCHW's in a beta (issue 17). On specs/resnet_mnist.spec (batch
  128, one thread, interleaved in one process on the busy 2-core machine,
  CPU time per step) that costs 57.9 -> 65.2 ms; NCHW throughout is 72.3 ms,
  so channels_last stays on.
- `maybe_compile(net)`: torch.compile (inductor) of the network's forward,
  which fuses the elementwise work around the convolutions and matmuls and
  generates the backward. On the CPU inductor builds C++ with the system's
  compiler; when there is none, or compilation fails, the eager network is
  used and the reason given. The compiled forward shares the network's
  parameters and modules; the first call compiles (tens of seconds on a
  2-core machine), so it is meant for full-size training batches only: a
  second batch size or eval mode would compile again.

Measured with benchmarks/profile_torch_step.py (torch 2.13 CPU, batch 128,
one process, blocks interleaved; one thread pinned to one core of the busy
2-core machine, where the two-thread figures collapse; provisional):

| model | variant | CPU ms/step | vs the reference loop |
|---|---|---|---|
| LeNet | specc as it is | 130-138 | 0.99-1.04 |
| LeNet | specc + channels_last | 109-119 | 1.18-1.22 |
| LeNet | reference + channels_last | 119 | 1.10-1.13 |
| LeNet | specc + torch.compile | 183 (compiling: 68 s) | 0.76-0.79 |
| LeNet | specc + channels_last + compile | 171 | 0.83 |
| MLP | specc as it is | 2.9-3.2 | 1.18-1.28 |
| MLP | specc + torch.compile | 3.7 | 1.04-1.06 |

So channels_last is on by default for models with 4-D weights and
torch.compile is off (`SPEED_DEFAULTS`): inductor's CPU kernels for this
size of model were slower than eager ATen/oneDNN, and compiling costs a
minute. Two threads with channels_last under the same load: 1.31 vs 1.04.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

# What specc's trainer applies unless told otherwise (`--no-channels-last`,
# `--compile`), from the measurements above.
SPEED_DEFAULTS = {"channels_last": True, "compile": False}


# ---------------------------------------------------------------- channels_last


def has_image_weights(net: nn.Module) -> bool:
    return any(p.dim() == 4 for p in net.parameters())


def channels_last(net: nn.Module) -> bool:
    """Put every 4-D parameter and buffer of `net` in channels-last memory
    format, in place (values and shapes unchanged; optimiser state made
    afterwards with `zeros_like` follows). Returns whether anything changed.
    Call it before the optimiser is made, or its fused kernel sees state in
    another format than the parameter."""
    if not has_image_weights(net):
        return False
    net.to(memory_format=torch.channels_last)
    return True


def channels_last_data(x: torch.Tensor) -> torch.Tensor:
    """An image split (N, C, H, W) stored channels-last; other ranks as they
    are. Gather batches from it with `x[idx]` to keep the format."""
    if x.dim() != 4 or not x.is_floating_point():
        return x
    return x.contiguous(memory_format=torch.channels_last)


def gather(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Rows `idx` of `x`, keeping x's memory format (index_select would not)."""
    if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        return x[idx]
    return x.index_select(0, idx)


# ---------------------------------------------------------------- torch.compile


def compiler_problem(device: torch.device | str = "cpu") -> str | None:
    """Why torch.compile cannot work here, or None."""
    if not hasattr(torch, "compile"):
        return f"torch {torch.__version__} has no torch.compile"
    if torch.device(device).type == "cpu":
        cxx = os.environ.get("CXX")
        if not (cxx and shutil.which(cxx)) and not any(shutil.which(c) for c in ("g++", "c++", "clang++")):
            return "no C++ compiler found (inductor builds CPU kernels with g++/clang++; set CXX)"
    return None


class CompiledForward:
    """The network's forward through torch.compile, falling back to the eager
    network (once, for good) when compilation fails. `reason` says which ran."""

    def __init__(self, net: nn.Module, compiled: Callable | None, reason: str):
        self.net, self.compiled, self.reason = net, compiled, reason

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.compiled is None:
            return self.net(x)
        try:
            return self.compiled(x)
        except Exception as err:  # inductor/dynamo failures have no common base class
            self.compiled = None
            self.reason = f"torch.compile failed, running eagerly ({type(err).__name__}: {_first_line(err)})"
            return self.net(x)


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0][:200] if text else ""


def maybe_compile(net: nn.Module, example: torch.Tensor | None = None, *, mode: str | None = None
                  ) -> tuple[CompiledForward, str]:
    """(forward, reason): `forward(x)` runs `net` compiled by inductor when it
    can, else eagerly; `reason` says which. Compilation happens at the first
    call (a training step), not here, so nothing runs twice: no BatchNorm
    statistics or dropout draws are spent on a warm-up. `example` (a batch)
    only picks the device. Random ops keep eager's random streams
    (inductor's fallback_random), so dropout masks match the eager run."""
    device = example.device if example is not None else next(net.parameters(), torch.empty(0)).device
    problem = compiler_problem(device)
    if problem:
        return CompiledForward(net, None, problem), problem
    try:
        import torch._inductor.config as inductor_config

        inductor_config.fallback_random = True
        compiled = torch.compile(net, backend="inductor", mode=mode, dynamic=False)
    except Exception as err:
        reason = f"torch.compile unavailable ({type(err).__name__}: {_first_line(err)})"
        return CompiledForward(net, None, reason), reason
    reason = "torch.compile (inductor)"
    return CompiledForward(net, compiled, reason), reason


# ---------------------------------------------------------------- for the trainer


@dataclass(frozen=True)
class SpeedOptions:
    """The speed options of one training run (the CLI's --no-channels-last,
    --compile)."""

    channels_last: bool = SPEED_DEFAULTS["channels_last"]
    compile: bool = SPEED_DEFAULTS["compile"]


class Speed:
    """The options applied to one trainer's network. Make it before the
    optimiser (channels_last moves the parameters' memory); then store each
    split with `data`, gather batches with `gather` and run full training
    batches through `forward` (a partial batch runs eagerly, so a compiled
    forward never compiles a second shape)."""

    def __init__(self, net: nn.Module, options: SpeedOptions, batch: int):
        self.net, self.batch = net, batch
        self.channels_last = options.channels_last and channels_last(net)
        self.compiled: CompiledForward | None = None
        self.compile_reason = "off"
        if options.compile:
            self.compiled, self.compile_reason = maybe_compile(net)

    def data(self, x: torch.Tensor) -> torch.Tensor:
        return channels_last_data(x) if self.channels_last else x

    def gather(self, x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        return gather(x, idx)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.compiled is not None and x.shape[0] == self.batch:
            return self.compiled(x)
        return self.net(x)

    def describe(self) -> str:
        compiled = self.compiled.reason if self.compiled is not None else f"torch.compile {self.compile_reason}"
        return f"channels_last {'on' if self.channels_last else 'off'}, {compiled}"


__all__ = ["CompiledForward", "Speed", "SpeedOptions", "SPEED_DEFAULTS", "channels_last", "channels_last_data", "compiler_problem",
           "gather", "has_image_weights", "maybe_compile"]
