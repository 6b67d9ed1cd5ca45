"""specc.noise's counter-based noise in torch. torch has no uint32
arithmetic, so words live in int64 and every operation that can leave 32 bits
is masked back; a product of two 32-bit values may overflow int64, but it
wraps, and its low 32 bits (all that is kept) stay right. The numbers equal
specc.noise's numpy reference (bits exactly)."""

from __future__ import annotations

import torch

from specc.noise import MASK, bits_with, gaussian_with, uniform_with


class TorchOps:
    """Arrays on one device; `step` may be an int or an integer tensor."""

    def __init__(self, device: torch.device | str = "cpu"):
        self.device = torch.device(device)

    def u32(self, x):
        if isinstance(x, int):
            return torch.tensor(x & MASK, dtype=torch.int64, device=self.device)
        return torch.as_tensor(x, device=self.device).to(torch.int64) & MASK

    def arange(self, n: int):
        return torch.arange(n, dtype=torch.int64, device=self.device)

    @staticmethod
    def mul(a, b):
        return (a * b) & MASK

    @staticmethod
    def add(a, b):
        return (a + b) & MASK

    @staticmethod
    def xor(a, b):
        return a ^ b

    @staticmethod
    def shr(a, k: int):
        return a >> k

    @staticmethod
    def expand(a):
        return a.unsqueeze(-1)

    @staticmethod
    def shape(a):
        return tuple(a.shape) if isinstance(a, torch.Tensor) else ()

    @staticmethod
    def reshape(a, shape):
        return a.reshape(shape)

    @staticmethod
    def to_float(a):
        return a.to(torch.float32)

    @staticmethod
    def mul_f(a, c: float):
        return a * c

    @staticmethod
    def mul_ff(a, b):
        return a * b

    log, sqrt, cos = staticmethod(torch.log), staticmethod(torch.sqrt), staticmethod(torch.cos)


def _step(step, device):
    """An int stays an int; anything else (a list, numpy or tensor of steps) becomes an int64 tensor."""
    if isinstance(step, int):
        return step
    return torch.as_tensor(step, dtype=torch.int64, device=device)


def gaussian(seed: int, stream: int, step, shape, device: torch.device | str = "cpu") -> torch.Tensor:
    """Standard normal float32 noise (see specc.noise) on `device`."""
    return gaussian_with(TorchOps(device), seed, stream, _step(step, device), shape)


def uniform(seed: int, stream: int, step, shape, device: torch.device | str = "cpu") -> torch.Tensor:
    return uniform_with(TorchOps(device), seed, stream, _step(step, device), shape)


def bits(seed: int, stream: int, step, count: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """The words as int64 values in [0, 2**32)."""
    return bits_with(TorchOps(device), seed, stream, _step(step, device), count)
