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
- `maybe_compile(net)`: torch.compile (inductor) of the network's forward,
  which fuses the elementwise work around the convolutions and matmuls and
  generates the backward. On the CPU inductor builds C++ with the system's
  compiler; when there is none, or compilation fails, the eager network is
  used and the reason given. The compiled forward shares the network's
  parameters and modules; the first call compiles (tens of seconds on a
  2-core machine), so it is meant for full-size training batches only: a
  second batch size or eval mode would compile again.

What was measured is in benchmarks/profile_torch_step.py's output and the
issue-13 report; `SPEED_DEFAULTS` holds what specc turns on by default.
"""

from __future__ import annotations

import os
import shutil
from typing import Callable

import torch
from torch import nn

# The options specc's trainer applies unless told otherwise (see the trainer's
# --no-compile / --no-channels-last flags). Filled in from measurements.
SPEED_DEFAULTS = {"channels_last": False, "compile": False}


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


__all__ = ["CompiledForward", "SPEED_DEFAULTS", "channels_last", "channels_last_data", "compiler_problem",
           "gather", "has_image_weights", "maybe_compile"]
