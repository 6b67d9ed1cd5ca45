"""Data parallelism on JAX's own engine: a `jax.sharding.Mesh` with one axis,
"data", and one jitted global-view step (XLA's SPMD partitioner splits it).

`start_world` starts the run's devices before jax's backend does: on CPU it
makes N host devices (`jax_num_cpu_devices`), so data parallelism can be
tried on a laptop; several processes join through `jax.distributed`
(explicit flags, or an environment jax detects by itself, such as SLURM),
CPU collectives through gloo.

`Placement` is where a trainer's arrays live. With one device it is exactly
the old `jax.device_put(x, device)`, so single-device results do not change.
On a mesh every array is global and replicated (parameters, optimiser state,
batch statistics, metrics, and the data set, each device gathering its own
rows of a batch from its copy); inside the step the batch is constrained to
be split by rows over "data", so XLA all-reduces the gradients and
BatchNorm's moments (the global batch's, as on one device). A batch whose
size does not divide the devices (the last, partial one) is left replicated:
every device computes it whole, the same result as one device's. Dropout
masks are specc.noise's at each sample's global row (noise.keep_mask), so
they do not depend on how the batch is split.
"""

from __future__ import annotations

import atexit
import os
import sys

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from specc.backend import BackendError
from specc.distributed import SINGLE, DistributedError, World, check_devices

from . import xla_flags

AXIS = "data"
# jax.distributed's timeouts (seconds): how long processes wait for each other
# at the start, and how soon a process that stopped sending heartbeats ends
# the others (a peer that dies inside a collective ends them at once: gloo's
# connection is reset).
INIT_TIMEOUT = int(os.environ.get("SPECC_JAX_INIT_TIMEOUT", "300"))
HEARTBEAT_TIMEOUT = int(os.environ.get("SPECC_JAX_HEARTBEAT_TIMEOUT", "60"))
SLURM_STEP = ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID", "SLURM_LOCALID")


def device(kind: str):
    """The one device of a single-device run."""
    platform = "gpu" if kind == "gpu" else "cpu"
    try:
        devices = jax.devices(platform)
    except RuntimeError:
        devices = []
    if not devices:
        raise BackendError(f"no {platform.upper()} is visible to jax (jax sees: "
                           f"{', '.join(d.platform for d in jax.devices())}); install jax with GPU support "
                           f"(pip install 'jax[cuda12]') or use --device cpu")
    return devices[0]


# ---------------------------------------------------------------- starting the world


def start_world(devices: int = 1, device: str = "cpu", coordinator: str | None = None,
                num_processes: int | None = None, process_id: int | None = None) -> World:
    """This process's place in the run, jax's devices and processes started
    (call before any jax computation). `devices` counts this process's
    devices: P processes with N each make a run of P*N devices."""
    n = check_devices(devices)
    launch = _launch(coordinator, num_processes, process_id)
    if n == 1 and launch is None:
        return SINGLE  # jax untouched: the single-device path as it always was
    if device != "gpu":
        _host_devices(n)
    if launch is not None:
        _initialize({**launch, **_gpu_ids(device, n)})
    local = _local_devices(device)
    if len(local) < n:
        raise DistributedError(f"--devices {n}: this process sees only {len(local)} {device.upper()} "
                               f"device{'s' if len(local) != 1 else ''}",
                               f"use --devices {len(local)} or fewer" if local else None)
    return World(devices=n * jax.process_count(), processes=jax.process_count(), rank=jax.process_index(),
                 local_devices=n)


def _launch(coordinator, num_processes, process_id) -> dict | None:
    """jax.distributed.initialize's arguments, {} for what jax detects by
    itself (SLURM, JAX_COORDINATOR_ADDRESS), None for a one-process run."""
    given = {"--coordinator": coordinator, "--num-processes": num_processes, "--process-id": process_id}
    if all(v is None for v in given.values()):
        return {} if _cluster_environment() else None
    missing = [flag for flag, v in given.items() if v is None]
    if missing:
        raise DistributedError(f"a multi-process run needs --coordinator, --num-processes and --process-id; "
                               f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} missing")
    if not 0 <= process_id < num_processes:
        raise DistributedError(f"--process-id {process_id} is not in [0, {num_processes})")
    if num_processes == 1:
        return None
    return {"coordinator_address": coordinator, "num_processes": num_processes, "process_id": process_id}


def _cluster_environment() -> bool:
    """A launch jax.distributed recognises by itself with several processes:
    JAX_COORDINATOR_ADDRESS, or a SLURM job step of several tasks (`srun`;
    the variables jax's SLURM detection reads)."""
    env = os.environ
    if env.get("JAX_COORDINATOR_ADDRESS"):
        return True
    if not all(name in env for name in SLURM_STEP):
        return False
    try:
        return int(env["SLURM_NTASKS"]) > 1
    except ValueError:
        return False


def _host_devices(n: int) -> None:
    """N CPU devices; jax reads the count once, when its CPU backend starts."""
    if xla_flags.backend_started():
        have = len(jax.local_devices(backend="cpu"))
        if have < n:
            raise DistributedError(f"--devices {n}: jax has already started in this process with {have} CPU "
                                   f"device{'s' if have != 1 else ''} (the host devices are made when jax starts)",
                                   "restart the process (the notebook's kernel) and start the world first")
        return
    jax.config.update("jax_num_cpu_devices", n)


def _gpu_ids(kind: str, n: int) -> dict:
    """The GPUs this process drives: its n, after those of the processes
    before it on the host (SLURM_LOCALID; 0 without it, or when the launcher
    already narrowed CUDA_VISIBLE_DEVICES to this process's). Without this,
    jax's SLURM detection would give each process one GPU."""
    if kind != "gpu":
        return {}
    local = 0 if os.environ.get("CUDA_VISIBLE_DEVICES") else int(os.environ.get("SLURM_LOCALID", "0") or 0)
    return {"local_device_ids": list(range(local * n, local * n + n))}


def _initialize(launch: dict) -> None:
    from jax._src import distributed

    if distributed.global_state.client is not None:
        return  # already joined (a second run in the same process)
    if xla_flags.backend_started():
        raise DistributedError("jax.distributed must start before jax computes anything in this process",
                               "restart the process and start the world first")
    try:
        jax.distributed.initialize(**launch, initialization_timeout=INIT_TIMEOUT,
                                   heartbeat_timeout_seconds=HEARTBEAT_TIMEOUT)
    except (RuntimeError, ValueError) as error:  # the coordinator unreachable, a peer missing, a bad address
        where = launch.get("coordinator_address") or os.environ.get("JAX_COORDINATOR_ADDRESS", "auto-detected")
        raise DistributedError(f"jax.distributed could not start (coordinator {where}): "
                               f"{_first_line(error)}") from None


def _local_devices(kind: str) -> list:
    platform = "gpu" if kind == "gpu" else "cpu"
    try:
        return sorted(jax.local_devices(backend=platform), key=lambda d: d.id)
    except RuntimeError:
        return []


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


PEER_LOST = ("gloo", "connection reset", "heartbeat", "coordination service")  # in a dead peer's errors
_leaving: list[bool] = []


def _leave() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(1)  # the status of a UserError


def lost_peer(error: BaseException, world: World) -> DistributedError:
    """A collective that failed because another process died, as a UserError.
    The process then leaves without jax's exit-time shutdown, which would
    wait for the dead peer until the heartbeat timeout and then abort."""
    if not _leaving:
        _leaving.append(True)
        atexit.register(_leave)  # runs before jax's own handler (atexit is last-in, first-out)
    return DistributedError(f"process {world.rank} of {world.processes}: a collective failed "
                            f"(another process probably died): {_first_line(error)}")


# ---------------------------------------------------------------- where arrays live


class Placement:
    """One device (world.devices == 1) or a mesh of all the run's devices."""

    def __init__(self, world: World, kind: str):
        self.world = world
        self.parallel = world.parallel
        self.guard = Guard(world)
        self.device = device(kind)
        self.mesh = self.replicated = self.rows = None
        if self.parallel:
            platform = self.device.platform
            # The first local_devices devices of each process, process-major:
            # device d takes rows [d*b/N, (d+1)*b/N) of each batch (distributed.batch_slice).
            devices = [d for p in range(world.processes)
                       for d in sorted((d for d in jax.devices(platform) if d.process_index == p),
                                       key=lambda d: d.id)[:world.local_devices]]
            self.mesh = Mesh(np.array(devices), (AXIS,))
            self.replicated = NamedSharding(self.mesh, PartitionSpec())
            self.rows = NamedSharding(self.mesh, PartitionSpec(AXIS))

    def put(self, tree):
        """Host or device values -> the run's arrays (replicated on a mesh; in
        several processes each passes the same values)."""
        if not self.parallel:
            return jax.device_put(tree, self.device)

        def one(leaf):
            value = np.asarray(self.fetch(leaf))
            return jax.make_array_from_callback(value.shape, self.replicated, lambda index: value[index])

        return jax.tree.map(one, tree)

    def fetch(self, tree):
        """The host values of replicated arrays: this process's own copy, so
        any process can read them without the others."""
        if not self.parallel:
            return jax.device_get(tree)

        def one(leaf):
            if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
                return np.asarray(leaf.addressable_data(0))
            return np.asarray(leaf)

        with self.guard:  # where a failed step's error surfaces
            return jax.tree.map(one, tree)

    def local(self, tree):
        """Replicated arrays as arrays of this process's first device, for work
        only this process does (the chief's pictures)."""
        if not self.parallel:
            return tree
        return jax.tree.map(lambda leaf: leaf.addressable_data(0) if isinstance(leaf, jax.Array) else leaf, tree)

    # -- inside jitted functions

    def split_rows(self, x):
        """A batch split by rows over the devices (unchanged on one device, or
        when its size does not divide them: computed whole on each)."""
        if not self.parallel or x.shape[0] % self.mesh.size:
            return x
        return jax.lax.with_sharding_constraint(x, self.rows)

    def keep_replicated(self, tree):
        """A step's carry comes out replicated, as it went in (so donation reuses its buffers)."""
        if not self.parallel:
            return tree
        return jax.lax.with_sharding_constraint(tree, self.replicated)


class Guard:
    """`with place.guard:` turns a failed collective of a multi-process run
    (a dead peer resets gloo's connection; jax raises it as a ValueError or a
    JaxRuntimeError) into a one-line DistributedError."""

    def __init__(self, world: World):
        self.world = world

    def __enter__(self):
        return self

    def __exit__(self, kind, error, tb) -> bool:
        failed = isinstance(error, (jax.errors.JaxRuntimeError, ValueError))
        if failed and self.world.processes > 1 and any(word in str(error).lower() for word in PEER_LOST):
            raise lost_peer(error, self.world) from None
        return False


__all__ = ["AXIS", "Guard", "Placement", "device", "lost_peer", "start_world"]
