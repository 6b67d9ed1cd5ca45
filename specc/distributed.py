"""Data parallelism without a framework: who this process is in a run, and how
a global batch is split between devices.

The two backends run data parallelism through their own engines (JAX: one
jitted step over a `jax.sharding.Mesh`, several processes through
`jax.distributed`; PyTorch: DistributedDataParallel, one process per device).
What they share lives here, numpy-free and framework-free:

- `World`: the run's devices and processes and this process's rank; rank 0
  is the chief, the only process that writes the run directory, progress,
  checkpoints and pictures. Every process runs the same loop and calls the
  recipe's methods in the same order (its collectives need them all).
- `batch_slice`: the contiguous part of global batch k that device d takes.
  Device d of N takes rows [lo, hi) of the same global batch one device
  would take (not DistributedSampler's interleaving), so N devices compute
  what one device computes.
- `check_batch`: a batch that does not split evenly is refused, naming the
  nearest batches that do. The last, partial batch of an epoch may split
  unevenly; the backends weight each device's loss by its share so the
  gradient is still the global batch's mean.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from .errors import UserError


class DistributedError(UserError):
    """A data-parallel setting that cannot work (devices, batch, launch)."""


@dataclass(frozen=True)
class World:
    devices: int = 1  # devices in the whole run, over all processes
    processes: int = 1  # processes in the run
    rank: int = 0  # this process's index; 0 is the chief
    local_devices: int = 1  # devices this process drives

    @property
    def chief(self) -> bool:
        return self.rank == 0

    @property
    def parallel(self) -> bool:
        return self.devices > 1

    def to_dict(self) -> dict:
        """What result.json records."""
        return {"devices": self.devices, "processes": self.processes}


SINGLE = World()


def batch_slice(size: int, parts: int, index: int) -> tuple[int, int]:
    """Rows [lo, hi) of a batch of `size` that part `index` of `parts` takes:
    contiguous, the first `size % parts` parts one row longer."""
    if not 0 <= index < parts:
        raise ValueError(f"part {index} of {parts}")
    base, extra = divmod(size, parts)
    lo = index * base + min(index, extra)
    return lo, lo + base + (1 if index < extra else 0)


def check_batch(batch: int, devices: int) -> None:
    """The train block's batch is the global batch; it must split evenly."""
    if devices > batch:
        raise DistributedError(f"{devices} devices but a batch of {batch}: each device needs at least one sample "
                               "of every batch", f"use at most --devices {batch}, or --batch {devices} or more")
    if devices > 1 and batch % devices:
        lower = batch - batch % devices
        higher = lower + devices
        nearest = f"--batch {lower} or --batch {higher}" if lower else f"--batch {higher}"
        raise DistributedError(f"batch {batch} does not split evenly over {devices} devices "
                               f"({batch / devices:.2f} samples each)", f"use {nearest}")


def check_devices(devices: int | None, what: str = "--devices") -> int:
    if devices is None:
        return 1
    if devices < 1:
        raise DistributedError(f"{what} must be at least 1, got {devices}")
    return devices


# ---------------------------------------------------------------- torchrun's environment


TORCH_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def torch_worker_env(environ=None) -> dict | None:
    """RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE as ints when this process
    was started by torchrun or torch's elastic launcher (specc's own
    `--devices N` launch included); None otherwise."""
    env = os.environ if environ is None else environ
    if "RANK" not in env or "WORLD_SIZE" not in env:
        return None
    try:
        values = {key: int(env[key]) for key in ("RANK", "WORLD_SIZE")}
        values["LOCAL_RANK"] = int(env.get("LOCAL_RANK", values["RANK"]))
        values["LOCAL_WORLD_SIZE"] = int(env.get("LOCAL_WORLD_SIZE", values["WORLD_SIZE"]))
    except ValueError:
        raise DistributedError("RANK, WORLD_SIZE, LOCAL_RANK and LOCAL_WORLD_SIZE must be integers "
                               f"(got RANK={env.get('RANK')!r}, WORLD_SIZE={env.get('WORLD_SIZE')!r})") from None
    return values
