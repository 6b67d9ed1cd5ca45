"""Data parallelism on the torch backend (issue 12): 2 gloo worker processes on
this CPU give one device's weights; a worker that dies ends the run with one
message naming its rank, and the run resumes on another number of devices.

The runs go through the CLI (`specc train ... --devices 2`, and torchrun
without --devices) in subprocesses with timeouts, so nothing can hang; the
GAN trainer runs under torchrun from a small driver. Layers right before a
BatchNorm have no bias here: BatchNorm cancels such a bias, so its gradient is
rounding noise, which Adam turns into steps that no two reductions share.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import torch

import importlib  # noqa: E402

from specc.backends.pytorch import parallel as par  # noqa: E402
from specc.distributed import SINGLE, DistributedError, batch_slice  # noqa: E402

L = importlib.import_module("specc.backends.pytorch.launch")  # the package's `launch` is the function

RUN_TIMEOUT = 240  # seconds for one run; a hang fails the test instead of CI
RTOL = 1e-5

MLP = """
model mlp {
    input [12]
    Dense(24, activation=relu)
    Dropout(0.3)
    Dense(24, activation=tanh)
    Dropout(0.2)
    Dense(3, activation=softmax)
}
train mlp {
    data      = synthetic(samples=400, classes=3, validation_split=0.2)
    loss      = cross_entropy
    optimizer = adam(lr=3e-3)
    batch     = 32
    epochs    = 2
    metrics   = [accuracy]
    seed      = 4
}
"""

CNN = """
model cnn {
    input [1, 8, 8]
    Conv2D(6, kernel=3, padding=same, bias=false)
    BatchNorm()
    ReLU()
    MaxPool(2)
    Conv2D(6, kernel=3, padding=same, activation=relu)
    Flatten()
    Dense(16, bias=false)
    BatchNorm(momentum=0.9)
    ReLU()
    Dropout(0.25)
    Dense(4, activation=softmax)
}
train cnn {
    data      = synthetic(samples=300, classes=4, validation_split=0.2)
    loss      = cross_entropy
    optimizer = adam(lr=3e-3)
    batch     = 40
    epochs    = 2
    metrics   = [accuracy]
    seed      = 2
}
"""

AUTOENCODER = """
model ae {
    input [16]
    Dense(8, activation=relu)
    Dropout(0.1)
    Dense(16)
}
train ae {
    recipe    = autoencoder(noise=0.2)
    data      = synthetic(samples=200, validation_split=0.2)
    loss      = mse
    optimizer = adam(lr=3e-3)
    batch     = 16
    epochs    = 2
    seed      = 1
}
"""

GAN = """
model generator {
    input [8]
    Dense(4*4*4, bias=false)
    BatchNorm()
    LeakyReLU(0.01)
    Reshape([4, 4, 4])
    ConvTranspose2D(1, kernel=3, stride=2, padding=same, activation=tanh)
}
model discriminator {
    input [1, 8, 8]
    Conv2D(4, kernel=3, stride=2, padding=same, bias=false)
    BatchNorm()
    LeakyReLU(0.01)
    Dropout(0.3)
    Flatten()
    Dense(1, activation=sigmoid)
}
train generator {
    recipe    = gan(discriminator, latent=8)
    data      = synthetic(samples=100)
    optimizer = adam(lr=2e-3, beta1=0.5)
    batch     = 16
    epochs    = 2
    seed      = 0
}
"""

# Runs the GAN trainer for two epochs of N samples (the last batch partial) in
# whatever world start_world finds; the chief saves the weights and metrics.
GAN_DRIVER = """
import json, sys
import numpy as np
import specc
from specc.backends import pytorch as P
from specc.plan import make_plan
from specc.weights import init_weights

spec, out, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
program = specc.load(spec)
g, d, train = program.models["generator"], program.models["discriminator"], program.trains["generator"]
plan = make_plan(g, train, n)
world = P.start_world()
t = P.gan_trainer(g, d, plan, init_weights(g, 0), init_weights(d, 0), 8, world=world)
data = t.put(np.random.default_rng(0).uniform(-1, 1, (n, 1, 8, 8)).astype(np.float32))
order, pulls = np.random.default_rng(1).permutation(n), []
for epoch in range(2):
    t.begin_epoch(data, order, epoch)
    for i in range(plan.steps_per_epoch):
        t.step(i)
    pulls.append(t.pull())
if world.chief:
    np.savez(out, **{role + "|" + k: v for role, w in t.get_weights().items() for k, v in w.items()})
    print(json.dumps({"pulls": pulls, "devices": world.devices}))
"""


# ---------------------------------------------------------------- helpers


def _env() -> dict:
    env = dict(os.environ)
    env.pop("SPECC_DEBUG", None)
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    return env


def _spec(tmp: Path, text: str, name: str) -> str:
    path = tmp / f"{name}.spec"
    if not path.exists():
        path.write_text(text)
    return str(path)


def _specc(*args: str, timeout: int = RUN_TIMEOUT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "specc", *args], capture_output=True, text=True, timeout=timeout,
                          env=_env())


def _train(spec: str, out: Path, devices: int, *extra: str) -> Path:
    done = _specc("train", spec, "--backend", "torch", "--devices", str(devices), "--quiet", "--out", str(out),
                  *extra)
    assert done.returncode == 0, done.stderr
    return out


def _weights(run: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(str(run / "weights.safetensors"))


def _assert_close(expected: dict, actual: dict, rtol: float = RTOL) -> None:
    assert sorted(expected) == sorted(actual)
    for key, value in expected.items():
        scale = max(float(np.linalg.norm(value)), 1e-12)
        diff = float(np.linalg.norm(actual[key] - value)) / scale
        assert diff <= rtol, f"{key}: relative difference {diff:.3g}"


def _result(run: Path) -> dict:
    return json.loads((run / "result.json").read_text())


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("parallel_torch")


@pytest.fixture(scope="module")
def mlp_one(work) -> Path:
    """The MLP on one device, 185 samples (the last batch of 25 splits 13/12)."""
    return _train(_spec(work, MLP, "mlp"), work / "mlp-1", 1, "--limit", "185")


# ---------------------------------------------------------------- two devices = one device


def test_mlp_with_dropout_on_two_workers_gives_one_devices_weights(work, mlp_one):
    two = _train(_spec(work, MLP, "mlp"), work / "mlp-2", 2, "--limit", "185")
    _assert_close(_weights(mlp_one), _weights(two))
    one_r, two_r = _result(mlp_one), _result(two)
    assert (one_r["devices"], one_r["processes"]) == (1, 1)
    assert (two_r["devices"], two_r["processes"]) == (2, 2)
    assert two_r["test_accuracy"] == one_r["test_accuracy"]
    assert two_r["test_loss"] == pytest.approx(one_r["test_loss"], rel=1e-5)
    history = [json.loads(line) for line in (two / "metrics.jsonl").read_text().splitlines()]
    expected = [json.loads(line) for line in (mlp_one / "metrics.jsonl").read_text().splitlines()]
    assert len(history) == len(expected) == 2
    for row, ref in zip(history, expected):
        assert row["loss"] == pytest.approx(ref["loss"], rel=1e-5)


def test_cnn_with_batchnorm_on_two_workers_gives_one_devices_weights(work):
    spec = _spec(work, CNN, "cnn")
    one = _train(spec, work / "cnn-1", 1, "--limit", "220")  # the last batch, 20, splits 10/10
    two = _train(spec, work / "cnn-2", 2, "--limit", "220")
    w1, w2 = _weights(one), _weights(two)
    _assert_close(w1, w2)
    moving = [k for k in w1 if "moving" in k]
    assert moving and all(not np.array_equal(w1[k], _initial_moving(k)) for k in moving)


def _initial_moving(key: str) -> float:
    return 0.0 if key.endswith("moving_mean") else 1.0


def test_denoising_autoencoder_on_two_workers_gives_one_devices_weights(work):
    spec = _spec(work, AUTOENCODER, "ae")
    one = _train(spec, work / "ae-1", 1, "--limit", "150")  # the input noise of each global row, split 3/3 at the end
    two = _train(spec, work / "ae-2", 2, "--limit", "150")
    _assert_close(_weights(one), _weights(two))
    assert _result(two)["test_loss"] == pytest.approx(_result(one)["test_loss"], rel=1e-5)


def test_torchrun_without_devices_takes_the_world_from_its_environment(work, mlp_one):
    out = work / "mlp-torchrun"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "specc", "train", _spec(work, MLP, "mlp"), "--backend", "torch", "--quiet", "--limit", "185",
           "--out", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=RUN_TIMEOUT, env=_env())
    assert done.returncode == 0, done.stderr
    assert _result(out)["devices"] == 2
    _assert_close(_weights(mlp_one), _weights(out))


def test_gan_trainer_on_two_workers_gives_one_devices_weights(work):
    spec, driver = _spec(work, GAN, "gan"), work / "gan_driver.py"
    driver.write_text(GAN_DRIVER)
    n = "70"  # batches of 16: the last one, 6, splits 3/3
    one = subprocess.run([sys.executable, str(driver), spec, str(work / "gan-1.npz"), n], capture_output=True,
                         text=True, timeout=RUN_TIMEOUT, env=_env())
    assert one.returncode == 0, one.stderr
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                          str(driver), spec, str(work / "gan-2.npz"), n], capture_output=True, text=True,
                         timeout=RUN_TIMEOUT, env=_env())
    assert two.returncode == 0, two.stderr
    r1, r2 = json.loads(one.stdout.splitlines()[-1]), json.loads(two.stdout.splitlines()[-1])
    assert (r1["devices"], r2["devices"]) == (1, 2)
    for p1, p2 in zip(r1["pulls"], r2["pulls"]):
        assert p1["samples"] == p2["samples"] == 70
        for key in ("d_loss", "g_loss", "d_real", "d_fake"):
            assert p2[key] == pytest.approx(p1[key], rel=1e-5), key
    w1, w2 = np.load(work / "gan-1.npz"), np.load(work / "gan-2.npz")
    _assert_close({k: w1[k] for k in w1.files}, {k: w2[k] for k in w2.files})


# ---------------------------------------------------------------- failure and resume


def _workers(parent: int, timeout: float = 60) -> dict[int, int]:
    """rank -> pid of the launched workers (children of the elastic agent)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = {}
        for pid in _children(parent):
            try:
                env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            except OSError:
                continue
            rank = next((int(e[5:]) for e in env if e.startswith(b"RANK=")), None)
            if rank is not None:
                found[rank] = pid
        if len(found) == 2:
            return found
        time.sleep(0.1)
    raise AssertionError("the workers did not start")


def _children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return out


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="finds the workers through /proc")
def test_a_killed_worker_ends_the_run_naming_its_rank_and_the_run_resumes_on_one_device(work):
    spec = _spec(work, MLP, "mlp")
    out = work / "killed"
    epochs = ["--limit", "480", "--epochs", "8"]
    proc = subprocess.Popen([sys.executable, "-m", "specc", "train", spec, "--backend", "torch", "--devices", "2",
                             "--quiet", "--out", str(out), *epochs], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=_env())
    try:
        workers = _workers(proc.pid)
        deadline = time.monotonic() + RUN_TIMEOUT
        while not (out / "checkpoint.json").exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert proc.poll() is None, "the run ended before a worker could be killed"
        os.kill(workers[1], signal.SIGKILL)
        _, stderr = proc.communicate(timeout=60)  # the agent stops rank 0: no hang
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 1
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("specc: error: worker rank 1 failed: killed by signal 9 (SIGKILL)"), stderr
    assert (out / "checkpoint.json").exists()

    done = _specc("train", spec, "--backend", "torch", "--quiet", "--resume", str(out))
    assert done.returncode == 0, done.stderr
    assert _result(out)["devices"] == 1
    reference = _train(spec, work / "uninterrupted", 1, *epochs)
    _assert_close(_weights(reference), _weights(out))


# ---------------------------------------------------------------- pieces, in this process


def test_a_workers_error_file_names_its_rank_and_keeps_the_hint(tmp_path, monkeypatch):
    from torch.distributed.elastic.multiprocessing.errors import ProcessFailure

    def failure(rank: int, message: str | None, exitcode: int = 1) -> ProcessFailure:
        path = tmp_path / f"error-{rank}.json"
        if message is not None:
            monkeypatch.setenv("TORCHELASTIC_ERROR_FILE", str(path))
            L.record_worker_error(message)
        return ProcessFailure(local_rank=rank, pid=100 + rank, exitcode=exitcode, error_file=str(path))

    culprit = failure(1, "specc: error: out of memory\nhint: use a smaller --batch")
    bystander = failure(0, "specc: internal error: DistBackendError: Connection closed by peer [127.0.0.1]:1234")
    err = L._failure({0: bystander, 1: culprit})
    assert isinstance(err, DistributedError)
    assert err.message == "worker rank 1 failed: out of memory (rank 0 also stopped)"
    assert err.hint == "use a smaller --batch"
    killed = failure(3, None, exitcode=-9)
    assert L._failure({3: killed}).message == "worker rank 3 failed: killed by signal 9 (SIGKILL)"
    same = "specc: error: batch 33 does not split evenly over 2 devices\nhint: use --batch 32 or --batch 34"
    err = L._failure({0: failure(0, same), 1: failure(1, same)})  # every rank's problem: no rank named
    assert (err.message, err.hint) == ("batch 33 does not split evenly over 2 devices", "use --batch 32 or --batch 34")


def test_a_worker_prints_its_error_only_under_torchrun(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCHELASTIC_ERROR_FILE", str(tmp_path / "error.json"))
    monkeypatch.delenv(L.LAUNCHED, raising=False)
    assert L.record_worker_error("specc: error: x") is False  # torchrun: the worker prints it
    monkeypatch.setenv(L.LAUNCHED, "1")
    assert L.record_worker_error("specc: error: x") is True  # specc's launch prints it once
    assert json.loads((tmp_path / "error.json").read_text())["message"] == "specc: error: x"


def test_a_worker_that_only_lost_its_peer_says_so_in_one_line(monkeypatch):
    gloo = RuntimeError("[../gloo/transport/tcp/pair.cc:537] Read error [127.0.0.1]:35038: Connection reset by peer. "
                        "This is typically caused by a remote worker hanging")
    monkeypatch.delenv("RANK", raising=False)
    assert L.lost_peer(gloo) is None  # not a worker
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    err = L.lost_peer(gloo)
    assert err.message == "worker rank 0 stopped: another worker left the run (connection reset by peer)"
    assert L._peer_lost(err.render())  # the launcher never names it the cause
    assert L.lost_peer(RuntimeError("mat1 and mat2 shapes cannot be multiplied")) is None


def test_record_worker_error_outside_a_worker_does_nothing(monkeypatch, tmp_path):
    monkeypatch.delenv("TORCHELASTIC_ERROR_FILE", raising=False)
    assert L.record_worker_error("specc: error: x") is False  # no file, no exception
    assert not list(tmp_path.iterdir())


def test_start_world_outside_a_launch(monkeypatch):
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(key, raising=False)
    assert par.start_world() is SINGLE
    with pytest.raises(DistributedError, match="one worker process per device"):
        par.start_world(devices=2)
    with pytest.raises(DistributedError, match="torchrun") as info:
        par.start_world(coordinator="host:1234", num_processes=2, process_id=0)
    assert "--rdzv-endpoint" in info.value.hint
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    with pytest.raises(DistributedError, match="this host runs 2 workers"):
        par.start_world(devices=3)


def test_dropout_masks_of_a_sample_do_not_depend_on_the_split():
    clock = par.DropoutClock(seed=7, batch=10)
    layer = par.SeededDropout(0.4, slot=0, clock=clock).train()
    x = torch.ones(10, 3, 5)
    clock.at(step=12, lo=0, hi=10)
    whole = layer(x)
    parts = []
    for d in range(3):
        lo, hi = batch_slice(10, 3, d)
        clock.at(step=12, lo=lo, hi=hi)
        parts.append(layer(x[lo:hi]))
    assert torch.equal(torch.cat(parts), whole)
    kept = (whole != 0).float().mean().item()
    assert 0.45 < kept < 0.75 and torch.allclose(whole[whole != 0], torch.tensor(1 / 0.6))

    def mask(step=12, slot=0, forward=0, seed=7):
        c = par.DropoutClock(seed=seed, batch=10)
        c.at(step, 0, 10, forward)
        return par.SeededDropout(0.4, slot, c).train()(x)

    others = [mask(step=13), mask(slot=1), mask(forward=1), mask(seed=8)]
    assert all(not torch.equal(m, whole) for m in others)
    assert torch.equal(layer.eval()(x), x)


def test_dropout_streams_never_meet_the_other_noise_streams():
    from specc import noise

    streams = {par.dropout_stream(slot, f) for slot in range(50) for f in range(par.FORWARDS)}
    assert len(streams) == 50 * par.FORWARDS
    fixed = {getattr(noise, n) for n in dir(noise) if n.startswith("STREAM_")}
    assert not streams & fixed
    with pytest.raises(ValueError):
        par.DropoutClock(0, 4).at(0, 0, 4, forward=par.FORWARDS)
