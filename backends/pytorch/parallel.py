"""Data parallelism on PyTorch: one process per device, DistributedDataParallel.

- `start_world`: this process's place in the run. Under torch's elastic
  launcher (specc's own `--devices N` launch, or torchrun) it joins the
  process group (gloo on CPU, NCCL on GPU) from the launcher's environment;
  otherwise the run is one device.
- Each rank takes its contiguous rows of the global batch that one device
  would take (specc.distributed.batch_slice), and weights its loss by its
  share, local_n * N / global_n, so that DDP's average of the ranks'
  gradients is the global batch's mean gradient, an uneven last batch too.
- BatchNorm normalises with the global batch's statistics, as one device
  does: `torch.nn.SyncBatchNorm`'s autograd function on CUDA, and on CPU (no
  SyncBatchNorm there) an all-reduce of the batch moments with autograd. The
  moving statistics follow specc's Keras BatchNorm (modules.py: biased
  variance, moving = m * moving + (1 - m) * batch).
- Dropout (every torch run, one device too) draws its masks from
  specc.noise: the mask of global sample j in step s depends on (seed, layer,
  forward, s, j) only, never on the number of devices.
- Metrics and evaluation sums are gathered from every rank when pulled.
"""

from __future__ import annotations

import atexit
import inspect
import os
import sys

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from specc.distributed import SINGLE, DistributedError, World, batch_slice, check_devices, torch_worker_env
from specc.noise import FORWARDS, dropout_stream  # the masks' formula, one definition for both backends

from .modules import BatchNorm
from .noise import uniform

# ---------------------------------------------------------------- the world


LEAVE_TIMEOUT_S = 600  # how long a finished worker waits for the others at exit (rank 0 still writes the run's files)


def _leave_process_group() -> None:
    """At a worker's exit (atexit, registered by start_world): leave the
    process group, and in a worker of specc's CLI that finished without an
    error (launch.exits_cleanly), end the process with os._exit(0) once
    stdout, stderr and logging are flushed.

    Why os._exit: destroy_process_group does not stop gloo's threads (the
    group's two `pt_gloo_runloop` workers and its `gloo_tcp_loop` are still
    running after it and after gc.collect(), with no Python object left that
    holds the group), so a normal exit runs the C++ static destructors while
    they run: the likely source of "terminate called without an active
    exception" (SIGABRT) that ended 2 of 12 finished two-worker runs (issue
    17), a std::thread destroyed while still running. os._exit
    skips interpreter finalisation and the static destructors; the run's
    files are closed by then. It also skips the atexit handlers registered
    before this one (logging's is called here).

    Why the barrier first: rank 0 writes the weights, result.json and the
    pictures after the last collective, while the other ranks are done; a
    worker that closes its gloo connections then leaves rank 0's group with
    a dead peer. Every finished worker waits (at most LEAVE_TIMEOUT_S) until
    all have finished, then all leave together. A worker that failed leaves
    at once and exits as it would have: the launcher stops the others."""
    if not dist.is_initialized():
        return
    from .launch import exits_cleanly

    clean = exits_cleanly()
    if clean:
        _wait_for_peers()
    try:
        dist.destroy_process_group()
    except Exception:  # noqa: BLE001 - exiting anyway; a peer may be gone already
        pass
    if clean:
        _exit_now(0)


def _wait_for_peers() -> None:
    """Every rank reaches this point, or LEAVE_TIMEOUT_S passes, or a peer is
    found gone (gloo's monitored barrier: it has a timeout and names
    missing ranks instead of hanging)."""
    from datetime import timedelta

    if dist.get_backend() != "gloo":
        return
    try:
        dist.monitored_barrier(timeout=timedelta(seconds=LEAVE_TIMEOUT_S))
    except Exception:  # noqa: BLE001 - a peer failed or left: the launcher reports that one
        pass


def _exit_now(status: int) -> None:
    """Flush what Python would have flushed at exit, then end the process
    without running finalisation or C++ static destructors."""
    import logging

    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError, AttributeError):  # closed, or no stream
            pass
    os._exit(status)


def start_world(devices: int | None = 1, device: str = "cpu", coordinator=None, num_processes=None,
                process_id=None) -> World:
    """The World of this process, its process group started (idempotent)."""
    if coordinator is not None or num_processes is not None or process_id is not None:
        raise DistributedError("--coordinator, --num-processes and --process-id start JAX's processes; "
                               "the torch backend's hosts come from torchrun",
                               "on each host run: torchrun --nnodes H --node-rank I --nproc-per-node N "
                               "--rdzv-backend c10d --rdzv-endpoint HOST:PORT -m specc train ... --backend torch")
    devices = check_devices(devices)
    env = torch_worker_env()
    if env is None:
        if devices > 1:  # `specc train` launches the workers before it gets here
            raise DistributedError(f"--devices {devices} on the torch backend needs one worker process per device",
                                   "run `specc train ... --backend torch --devices N`, or torchrun "
                                   "--nproc-per-node N -m specc train ...")
        return SINGLE
    if devices > 1 and devices != env["LOCAL_WORLD_SIZE"]:
        raise DistributedError(f"--devices {devices}, but this host runs {env['LOCAL_WORLD_SIZE']} workers",
                               "under torchrun, leave out --devices (torchrun's --nproc-per-node decides)")
    size = env["WORLD_SIZE"]
    if size == 1:
        return SINGLE
    gpu = device in ("gpu", "cuda")
    if gpu:
        if torch.cuda.device_count() <= env["LOCAL_RANK"]:
            raise DistributedError(f"worker {env['LOCAL_RANK']} of this host has no GPU "
                                   f"(torch sees {torch.cuda.device_count()})", "use --device cpu")
        torch.cuda.set_device(env["LOCAL_RANK"])
    elif "OMP_NUM_THREADS" not in os.environ:  # the workers of a host share its cores
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // env["LOCAL_WORLD_SIZE"]))
    if not dist.is_initialized():
        dist.init_process_group("nccl" if gpu else "gloo")  # env://: MASTER_ADDR, MASTER_PORT, RANK, WORLD_SIZE
        atexit.register(_leave_process_group)
    return World(devices=size, processes=size, rank=env["RANK"], local_devices=1)


def data_parallel(net: nn.Module, world: World) -> nn.Module:
    """What a train step calls: `net` itself on one device, else DDP over it.
    Buffers are not broadcast: every rank computes the same moving
    statistics from the global batch."""
    if not world.parallel or not any(p.requires_grad for p in net.parameters()):
        return net  # (DDP refuses a module with nothing to train)
    device = next(net.parameters()).device
    ids = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else None
    ddp = nn.parallel.DistributedDataParallel
    keep_buffers = "forward_sync_buffers" if "forward_sync_buffers" in inspect.signature(ddp).parameters \
        else "broadcast_buffers"  # the newer name, where this torch has it
    return ddp(net, device_ids=ids, **{keep_buffers: False})


def rows(sizes: list[int], world: World) -> list[tuple[int, int]]:
    """This rank's rows [lo, hi) of each global batch of `sizes`."""
    return [batch_slice(n, world.devices, world.rank) if world.parallel else (0, n) for n in sizes]


def share(local: int, total: int, world: World) -> float:
    """The factor on a rank's mean loss that makes DDP's gradient average the global batch's mean."""
    return local * world.devices / total if world.parallel else 1.0


# ---------------------------------------------------------------- reductions


def gather(world: World, t: torch.Tensor) -> torch.Tensor:
    """Every rank's `t`, stacked in rank order (one all_gather)."""
    parts = [torch.empty_like(t) for _ in range(world.devices)]
    dist.all_gather(parts, t.contiguous())
    return torch.stack(parts)


def all_sum(world: World, t: torch.Tensor) -> torch.Tensor:
    if world.parallel:
        dist.all_reduce(t)
    return t


def reduce_window(world: World, carry: torch.Tensor) -> torch.Tensor:
    """The supervised trainer's [loss sum, hits, first bad step + 1 (0: none),
    its loss] over all ranks: sums added, the earliest bad step kept."""
    if not world.parallel:
        return carry
    ranks = gather(world, carry)
    step = torch.where(ranks[:, 2] > 0, ranks[:, 2], torch.full_like(ranks[:, 2], float("inf")))
    return torch.cat([ranks[:, :2].sum(0), ranks[step.argmin(), 2:]])


def reduce_log(world: World, pulled: tuple, device: torch.device) -> tuple:
    """StepLog.pull's (sums, samples, bad step or -1, bad row or None) over all ranks."""
    if not world.parallel:
        return pulled
    sums, samples, bad_step, bad_row = pulled
    width = len(sums)
    row = np.concatenate([sums, [samples, bad_step], np.full(width, np.nan) if bad_row is None else bad_row])
    ranks = gather(world, torch.as_tensor(row, dtype=torch.float64, device=device)).cpu().numpy()
    steps = ranks[:, width + 1]
    total = ranks[:, :width].sum(0), int(ranks[:, width].sum())
    if not (steps >= 0).any():
        return (*total, -1, None)
    k = int(np.where(steps >= 0, steps, np.inf).argmin())
    return (*total, int(steps[k]), ranks[k, width + 2:])


# ---------------------------------------------------------------- BatchNorm on the global batch


class _AllSum(torch.autograd.Function):
    """Sum over ranks whose gradient is the sum over ranks of the gradients
    (torch.distributed.nn.functional.all_reduce's, which is deprecated)."""

    @staticmethod
    def forward(ctx, t):
        t = t.clone()
        dist.all_reduce(t)
        return t

    @staticmethod
    def backward(ctx, grad):
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


class GlobalBatchNorm(BatchNorm):
    """specc's BatchNorm whose training statistics are the global batch's."""

    def forward(self, x):
        if not self.training:
            return super().forward(x)
        if self.transpose:
            x = x.transpose(1, self.feature_axis)
        y = self._sync(x) if x.is_cuda else self._moments(x)
        return y.transpose(1, self.feature_axis) if self.transpose else y

    def _moments(self, x):
        """All-reduce of (sum, sum of squares, count) per feature, in float64 so
        that E[x^2] - E[x]^2 keeps float32's precision; the all-reduce's
        gradient is the all-reduce of the gradients, as SyncBatchNorm's."""
        c, dims = x.shape[1], [0, *range(2, x.dim())]
        xd = x.double()
        count = torch.full((1,), x.numel() // max(c, 1), dtype=torch.float64, device=x.device)
        total = _AllSum.apply(torch.cat([xd.sum(dims), (xd * xd).sum(dims), count]))
        mean = total[:c] / total[-1]
        var = (total[c:2 * c] / total[-1] - mean * mean).clamp_min(0.0)
        mean, var = mean.float(), var.float()
        self._update_moving(mean, var)
        view = (1, c) + (1,) * (x.dim() - 2)
        scale = torch.rsqrt(var + self.eps) * self.weight
        return (x - mean.view(view)) * scale.view(view) + self.bias.view(view)

    def _sync(self, x):
        """torch's SyncBatchNorm function; with momentum 1 its running
        buffers receive this batch's global mean and unbiased variance."""
        from torch.nn.modules._functions import SyncBatchNorm as SyncFunction

        c = x.shape[1]
        mean, unbiased = torch.zeros(c, device=x.device), torch.zeros(c, device=x.device)
        y = SyncFunction.apply(x, self.weight, self.bias, mean, unbiased, self.eps, 1.0, dist.group.WORLD,
                               dist.get_world_size())
        n = torch.full((1,), x.numel() // c, dtype=torch.float32, device=x.device)
        dist.all_reduce(n)
        self._update_moving(mean, unbiased * ((n - 1) / n))  # Keras moves the biased variance
        return y

    def _update_moving(self, mean, var):
        with torch.no_grad():
            m = self.momentum
            self.running_mean.copy_(self.running_mean * m + mean.detach() * (1.0 - m))
            self.running_var.copy_(self.running_var * m + var.detach() * (1.0 - m))


def global_batch_norm(net: nn.Module, world: World) -> None:
    """On several devices, every BatchNorm of `net` normalises with the global
    batch's statistics (the same parameters, buffers and settings; only the
    class changes, so the state_dict names stay)."""
    if world.parallel:
        for module in net.modules():
            if type(module) is BatchNorm:
                module.__class__ = GlobalBatchNorm


# ---------------------------------------------------------------- dropout from counter-based noise

class DropoutClock:
    """What the next training forward's masks depend on: the global step,
    the rows [lo, hi) of the global batch this rank holds, and which forward
    of the step it is. One clock per trainer, set before each forward."""

    def __init__(self, seed: int, batch: int, device: torch.device | str = "cpu"):
        self.seed, self.batch = int(seed), int(batch)
        self.step, self.lo, self.hi, self.forward = 0, 0, 0, 0
        # step * batch as a tensor, written in place: torch.compile treats an
        # int attribute as a constant and would recompile at every step
        self.offset = torch.zeros([], dtype=torch.int64, device=device)

    def at(self, step: int, lo: int, hi: int, forward: int = 0) -> None:
        if not 0 <= forward < FORWARDS:
            raise ValueError(f"forward {forward} of a step: at most {FORWARDS}")
        self.step, self.lo, self.hi, self.forward = int(step), int(lo), int(hi), int(forward)
        self.offset.fill_(self.step * self.batch)  # no host sync

    def keys(self, device: torch.device) -> torch.Tensor:
        """One noise key per sample: step * batch + j (j global), so sample j of step s always draws the same."""
        return torch.arange(self.lo, self.hi, dtype=torch.int64, device=device) + self.offset.to(device)


class SeededDropout(nn.Module):
    """Dropout (Keras's: kept values scaled by 1/(1-rate)) whose mask for a
    sample is uniform(seed, its stream, its key, sample shape) < 1 - rate."""

    def __init__(self, rate: float, slot: int, clock: DropoutClock):
        super().__init__()
        self.rate, self.slot, self.clock = float(rate), int(slot), clock

    def forward(self, x):
        if not self.training or self.rate == 0.0:
            return x
        clock, keep = self.clock, 1.0 - self.rate
        if x.shape[0] != clock.hi - clock.lo:
            raise AssertionError(f"dropout saw {x.shape[0]} samples; the clock is set for {clock.hi - clock.lo}")
        u = uniform(clock.seed, dropout_stream(self.slot, clock.forward), clock.keys(x.device), x.shape[1:], x.device)
        return x * (u < keep).to(x.dtype) * (1.0 / keep)

    def extra_repr(self) -> str:
        return f"rate={self.rate}, slot={self.slot}, counter-based"


def seeded_dropout(net: nn.Module, clock: DropoutClock, first_slot: int = 0) -> int:
    """Swap every nn.Dropout of `net` for a SeededDropout on `clock`, slots
    counted from `first_slot`; returns the next free slot."""
    slot = first_slot
    for parent in list(net.modules()):
        for name, module in list(parent._modules.items()):
            if isinstance(module, nn.Dropout):
                parent._modules[name] = SeededDropout(module.p, slot, clock)
                slot += 1
    return slot
