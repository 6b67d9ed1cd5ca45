"""`specc train ... --backend torch --devices N`: N worker processes through
torch's elastic launcher, as `torchrun --standalone --nproc_per_node N -m
specc ...` would start them.

The parent runs no model: it starts N copies of `python -m specc <argv>`
(a binary entrypoint, so nothing is pickled), each with torch elastic's
environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, ...), from which
`parallel.start_world` joins the process group. max_restarts is 0: a worker
that fails ends the run, the agent stops the others (SIGTERM, then SIGKILL),
and `launch` raises one DistributedError naming the rank and its error. A
worker leaves that error where the agent reads it (`record_worker_error`,
TORCHELASTIC_ERROR_FILE, in the JSON of torch's ProcessFailure) and, in a
run `launch` started (SPECC_LAUNCHED=1), prints nothing itself: the user
sees one error line. A worker whose collective failed because a peer died
says so (`lost_peer`) and is never named as the cause.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import tempfile
import time
import uuid

from specc.distributed import DistributedError, check_devices, torch_worker_env

# Messages of a worker that only lost contact with a peer that failed first
# (gloo's and NCCL's words for a closed connection, and lost_peer's): never the root cause.
LEFT = "another worker left the run"
PEER_LOST = ("connection closed by peer", "connection reset by peer", "broken pipe", "socket closed",
             "read error", "remote process exited", "ncclremoteerror", "communicator was aborted", LEFT)
LAUNCHED = "SPECC_LAUNCHED"  # set in the workers of `launch`: their errors are the parent's to print
SHUTDOWN_S = 5  # a stopped worker gets this long between SIGTERM and SIGKILL
QUIET_LOGGERS = ("torch.distributed.elastic", "torch.distributed.launcher", "torch.distributed.run")


_failed = False  # this worker reported an error (record_worker_error)


def exits_cleanly() -> bool:
    """Whether this process is a worker running specc's CLI (`python -m
    specc`, as `launch` and `torchrun -m specc` start it) that has reported
    no error, so that its exit status is 0: in an elastic launcher's worker
    (TORCHELASTIC_ERROR_FILE set) the CLI reports every error through
    record_worker_error (a Ctrl-C aside, which stops the launcher too). Any
    other program (a script under torchrun), or a worker started by hand
    with RANK and WORLD_SIZE, may end otherwise: False."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    return (getattr(spec, "name", None) == "specc.__main__" and bool(os.environ.get("TORCHELASTIC_ERROR_FILE"))
            and not _failed and not hasattr(sys, "last_value"))


def record_worker_error(message: str) -> bool:
    """In a worker: write this rank's error (the CLI's rendered message) to
    TORCHELASTIC_ERROR_FILE for the launcher. True when the worker should not
    print it: specc's `launch` prints the run's one error line itself (under
    torchrun every worker prints its own). A no-op outside a worker."""
    global _failed
    path = os.environ.get("TORCHELASTIC_ERROR_FILE")
    if not path:
        return False
    _failed = True
    now = time.time()
    data = {"message": message, "timestamp": int(now),
            "specc": {"time": now, "rank": os.environ.get("RANK")}}  # sub-second order of failures
    try:
        with open(path, "w") as fp:
            json.dump(data, fp)
    except OSError:
        return False
    return os.environ.get(LAUNCHED) == "1"


def lost_peer(err: BaseException) -> DistributedError | None:
    """In a worker: a collective's error because a peer went away (another
    worker failed first, and the launcher reports that one) as one line that
    is not a bug report; None for any other error."""
    if torch_worker_env() is None or not isinstance(err, RuntimeError):
        return None
    low = str(err).lower()
    words = next((w for w in PEER_LOST if w in low), None)
    if words is None:
        return None
    return DistributedError(f"worker rank {os.environ.get('RANK')} stopped: {LEFT} ({words})")


def launch(argv: list[str], devices: int, device: str = "cpu") -> int:
    """Run `specc <argv>` in `devices` local worker processes; 0 when all
    finish. A failed worker raises DistributedError; Ctrl-C, KeyboardInterrupt."""
    from torch.distributed.elastic.multiprocessing import DefaultLogsSpecs
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    devices = check_devices(devices)
    if device in ("gpu", "cuda"):
        _check_gpus(devices)
    with tempfile.TemporaryDirectory(prefix="specc-launch-") as logs, _quiet(), _worker_env(LAUNCHED, "1"):
        config = LaunchConfig(
            min_nodes=1, max_nodes=1, nproc_per_node=devices, run_id=f"specc-{uuid.uuid4().hex[:12]}",
            rdzv_backend="c10d", rdzv_endpoint="localhost:0",  # port 0: the OS picks a free one
            max_restarts=0, monitor_interval=0.1, logs_specs=DefaultLogsSpecs(log_dir=logs),
            shutdown_timeout=SHUTDOWN_S)
        try:
            elastic_launch(config, entrypoint=sys.executable)("-m", "specc", *argv)
        except ChildFailedError as failed:
            raise _failure(failed.failures) from None
        except SignalException:  # the agent caught SIGINT/SIGTERM and stopped the workers
            raise KeyboardInterrupt from None
    return 0


def _check_gpus(devices: int) -> None:
    import torch

    have = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if have < devices:
        raise DistributedError(f"--devices {devices} --device gpu needs {devices} GPUs; torch sees {have}",
                               f"use --devices {have}" if have > 1 else "use --device cpu")


@contextlib.contextmanager
def _worker_env(key: str, value: str):
    """`key` set for the workers, which inherit this process's environment."""
    saved = os.environ.get(key)
    os.environ[key] = value
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = saved


@contextlib.contextmanager
def _quiet():
    """The agent logs its config, rendezvous and failures at INFO to ERROR;
    the user sees specc's output and one error line instead."""
    saved = {name: logging.getLogger(name).level for name in QUIET_LOGGERS}
    for name in saved:
        logging.getLogger(name).setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)


def _failure(failures: dict) -> DistributedError:
    """The root cause among the failed workers: not one that only lost its
    peer, then the earliest; one error naming its rank."""
    def key(item):
        _, failure = item
        data = failure.error_file_data if isinstance(failure.error_file_data, dict) else {}
        when = (data.get("specc") or {}).get("time", failure.timestamp)
        return (_peer_lost(_text(failure)), float(when))

    rank, failure = min(failures.items(), key=key)
    message, hint = _split(_text(failure))
    if len(failures) > 1 and all(_split(_text(f)) == (message, hint) for f in failures.values()) and message:
        return DistributedError(message, hint)  # every worker found the same problem: not a rank's
    if not message:
        message = f"exited with status {failure.exitcode}"
    others = sorted(r for r in failures if r != rank)
    also = f" (rank{'s' if len(others) > 1 else ''} {', '.join(map(str, others))} also stopped)" if others else ""
    return DistributedError(f"worker rank {rank} failed: {message}{also}", hint)


def _text(failure) -> str:
    """A failure's message: ours, torch's record format, or its signal."""
    data = failure.error_file_data if isinstance(failure.error_file_data, dict) else {}
    if failure.exitcode < 0 and "specc" not in data:  # died without a word
        return f"killed by signal {-failure.exitcode} ({failure.signal_name()})"
    message = failure.message
    if isinstance(message, dict):  # torch's own ErrorHandler format
        message = message.get("message", "")
    return str(message or "")


def _split(text: str) -> tuple[str, str | None]:
    """The CLI's `specc: error: X` / `hint: Y` lines -> (X, Y)."""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    hint = next((line[len("hint: "):] for line in lines if line.startswith("hint: ")), None)
    body = [line for line in lines if not line.startswith("hint: ")]
    first = body[0] if body else ""
    for prefix in ("specc: error: ", "specc: "):
        if first.startswith(prefix):
            first = first[len(prefix):]
            break
    if first.startswith("To enable traceback"):  # torch's filler for an exit without an error file
        first = ""
    return first, hint


def _peer_lost(text: str) -> bool:
    low = text.lower()
    return any(words in low for words in PEER_LOST)
