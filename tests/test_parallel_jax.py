"""Data parallelism on the JAX backend (backends/jax_flax/parallel.py), end to
end through the CLI: 2 host devices, and 2 processes through jax.distributed
on loopback, give one device's weights; a run resumes with another device
count; a process killed mid-run ends the other one (no hang).

Every run is a subprocess: jax makes its host devices when it starts, and
this test session's jax has already started with one. Timeouts everywhere, so
a hang fails a test instead of CI.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import jax  # noqa: F401
from specc.distributed import DistributedError  # noqa: E402
from specc.weights import load_weights  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 240  # seconds for one run; a run here takes a few

# Dropout too: its masks come from specc's counter-based noise per global
# step and sample (the same as torch's), which must not depend on how the
# batch is split. 485 samples, batch 50: the last
# batch (35) does not split over 2 devices and runs whole on each.
MLP = """
model mlp {
    input [1, 8, 8]
    Flatten()
    Dense(32, activation=relu)
    Dropout(0.2)
    Dense(4, activation=softmax)
}
train mlp {
    data      = synthetic(samples=485, classes=4, test_samples=64)
    loss      = cross_entropy
    optimizer = adam(lr=3e-3)
    batch     = 50
    epochs    = 2
    metrics   = [accuracy]
    seed      = 1
}
"""

# BatchNorm: the global batch's statistics on both devices; the last batch
# (180 % 32 = 20) splits over 2.
CNN = """
model cnn {
    input [1, 8, 8]
    Conv2D(4, kernel=3, padding=same, bias=false)
    BatchNorm()
    ReLU()
    MaxPool(2)
    Flatten()
    Dense(4, activation=softmax)
}
train cnn {
    data      = synthetic(samples=180, classes=4, test_samples=48)
    loss      = cross_entropy
    optimizer = sgd(lr=0.05, momentum=0.9)
    batch     = 32
    epochs    = 1
    metrics   = [accuracy]
    seed      = 2
}
"""

# No bias before a BatchNorm: its gradient is zero but for float noise, which
# Adam's m/sqrt(v) blows up to the learning rate (as in test_gan_backends).
GAN = """
model g {
    input [8]
    Dense(32, bias=false)
    BatchNorm()
    LeakyReLU(0.2)
    Dense(784, activation=tanh)
    Reshape([1, 28, 28])
}
model d {
    input [1, 28, 28]
    Flatten()
    Dense(32)
    LeakyReLU(0.2)
    Dense(1, activation=sigmoid)
}
train g {
    recipe    = gan(d, latent=8)
    data      = mnist(range=[-1, 1])
    optimizer = adam(lr=2e-4, beta1=0.5)
    batch     = 64
    epochs    = 1
    seed      = 3
}
"""
GAN_LIMIT = 160  # two batches of 64 and one of 32


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def command(spec: Path, out: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "specc", "train", str(spec), "--backend", "jax", "--out", str(out), "--quiet",
            *args]


def env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT), "SPECC_OFFLINE": "1"}


def train(spec: Path, out: Path, *args: str) -> dict:
    done = subprocess.run(command(spec, out, *args), cwd=ROOT, env=env(), capture_output=True, text=True,
                          timeout=TIMEOUT)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((out / "result.json").read_text())


def train_processes(spec: Path, out: Path, processes: int, *args: str) -> dict:
    """One run of `processes` jax processes on loopback (one device each)."""
    port = free_port()
    procs = [subprocess.Popen(command(spec, out, "--coordinator", f"127.0.0.1:{port}", "--num-processes",
                                      str(processes), "--process-id", str(rank), *args),
                              cwd=ROOT, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for rank in range(processes)]
    try:
        outputs = [proc.communicate(timeout=TIMEOUT) for proc in procs]
    finally:
        for proc in procs:
            proc.kill()
    for rank, (proc, (_, err)) in enumerate(zip(procs, outputs)):
        assert proc.returncode == 0, f"process {rank}: {err[-3000:]}"
    return json.loads((out / "result.json").read_text())


def assert_same_weights(a: Path, b: Path, name: str = "weights.safetensors", rel: float = 1e-5) -> None:
    wa, wb = load_weights(a / name), load_weights(b / name)
    assert wa.keys() == wb.keys()
    for key in wa:
        scale = max(float(np.max(np.abs(wa[key]))), 1e-6)
        err = float(np.max(np.abs(wa[key] - wb[key]))) / scale
        assert err <= rel, f"{name} {key}: relative difference {err:.2e}"


@pytest.fixture(scope="module")
def tmp(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("parallel_jax")
    for name, text in (("mlp", MLP), ("cnn", CNN), ("gan", GAN)):
        (path / f"{name}.spec").write_text(text)
    return path


@pytest.fixture(scope="module")
def mlp_one(tmp) -> Path:
    out = tmp / "mlp-1"
    result = train(tmp / "mlp.spec", out)
    assert (result["devices"], result["processes"]) == (1, 1)
    return out


@pytest.mark.parametrize("name, extra", [("mlp", ()), ("cnn", ()), ("gan", ("--limit", str(GAN_LIMIT)))])
def test_two_host_devices_give_one_devices_weights(tmp, mlp_one, name, extra):
    one = mlp_one if name == "mlp" else tmp / f"{name}-1"
    if name != "mlp":
        train(tmp / f"{name}.spec", one, *extra)
    two = tmp / f"{name}-2"
    result = train(tmp / f"{name}.spec", two, "--devices", "2", *extra)
    assert (result["devices"], result["processes"]) == (2, 1)
    if name == "gan":
        assert_same_weights(one, two)  # the generator
        assert_same_weights(one, two, "discriminator.safetensors")
    else:
        assert_same_weights(one, two)
        first = json.loads((one / "result.json").read_text())
        assert result["test_loss"] == pytest.approx(first["test_loss"], rel=1e-5)


def test_two_processes_through_jax_distributed_give_one_devices_weights(tmp, mlp_one):
    out = tmp / "mlp-2p"
    result = train_processes(tmp / "mlp.spec", out, 2)
    assert (result["devices"], result["processes"]) == (2, 2)
    assert_same_weights(mlp_one, out)


def test_a_run_resumes_with_another_device_count(tmp, mlp_one):
    out = tmp / "mlp-resumed"
    train(tmp / "mlp.spec", out, "--devices", "2", "--epochs", "1")
    done = subprocess.run([sys.executable, "-m", "specc", "train", str(tmp / "mlp.spec"), "--backend", "jax",
                           "--resume", str(out), "--epochs", "2", "--quiet"],
                          cwd=ROOT, env=env(), capture_output=True, text=True, timeout=TIMEOUT)
    assert done.returncode == 0, done.stderr[-3000:]
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2
    assert json.loads((out / "result.json").read_text())["devices"] == 1
    assert_same_weights(mlp_one, out)


def test_a_killed_process_ends_the_other_without_a_hang(tmp):
    spec = tmp / "long.spec"
    spec.write_text(MLP.replace("epochs    = 2", "epochs    = 5000"))
    out, port = tmp / "killed", free_port()
    procs = [subprocess.Popen(command(spec, out, "--coordinator", f"127.0.0.1:{port}", "--num-processes", "2",
                                      "--process-id", str(rank)),
                              cwd=ROOT, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for rank in range(2)]
    try:
        deadline = time.monotonic() + TIMEOUT
        metrics = out / "metrics.jsonl"
        while not (metrics.is_file() and metrics.read_text().strip()):  # an epoch done: both are training
            assert time.monotonic() < deadline and procs[0].poll() is None, "the run did not start"
            time.sleep(0.2)
        procs[1].send_signal(signal.SIGKILL)
        _, err = procs[0].communicate(timeout=60)  # gloo's connection is reset at once
    finally:
        for proc in procs:
            proc.kill()
            proc.communicate()
    assert procs[0].returncode == 1, err[-3000:]
    assert "specc: error: process 0 of 2: a collective failed (another process probably died)" in err, err[-3000:]
    assert json.loads((out / "checkpoint.json").read_text())  # the last completed epoch's, intact


# ---------------------------------------------------------------- in this process (jax already started)


def test_start_world_checks_the_launch_flags():
    from specc.backends.jax_flax import parallel

    assert parallel.start_world(devices=1).devices == 1  # nothing to start: jax untouched
    with pytest.raises(DistributedError, match="--num-processes, --process-id are missing"):
        parallel.start_world(coordinator="127.0.0.1:1234")
    with pytest.raises(DistributedError, match="not in"):
        parallel.start_world(coordinator="127.0.0.1:1234", num_processes=2, process_id=2)


def test_more_host_devices_than_jax_started_with_is_a_clean_error():
    import jax

    from specc.backends.jax_flax import parallel

    jax.devices()  # this session's jax has started (with one CPU device, the default)
    have = len(jax.local_devices(backend="cpu"))
    with pytest.raises(DistributedError, match="already started") as err:
        parallel.start_world(devices=have + 1)
    assert "restart" in err.value.hint


def test_a_slurm_step_of_several_tasks_is_a_multi_process_launch(monkeypatch):
    from specc.backends.jax_flax import parallel

    monkeypatch.delenv("JAX_COORDINATOR_ADDRESS", raising=False)
    for name in parallel.SLURM_STEP:
        monkeypatch.setenv(name, "1")
    monkeypatch.setenv("SLURM_NTASKS", "2")
    assert parallel._launch(None, None, None) == {}  # jax.distributed reads the rest from SLURM
    monkeypatch.setenv("SLURM_NTASKS", "1")
    assert parallel._launch(None, None, None) is None
    monkeypatch.setenv("SLURM_NTASKS", "2")
    monkeypatch.delenv("SLURM_STEP_NODELIST")  # the batch script itself, not an srun step
    assert parallel._launch(None, None, None) is None
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert parallel._gpu_ids("gpu", 2) == {"local_device_ids": [2, 3]}  # the second task on the node
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5")  # the launcher gave this task its own GPUs
    assert parallel._gpu_ids("gpu", 2) == {"local_device_ids": [0, 1]}
    assert parallel._gpu_ids("cpu", 2) == {}
