"""The autoencoder and GAN recipes end to end: short real runs on both
backends (finite losses, pictures, a complete result), cross-backend parity
of a few steps from one seed, resume, and `specc eval` / `specc sample`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from specc.runner import Interrupted, Options, evaluate_weights, train_model

import jax  # noqa: F401
import torch  # noqa: F401
import matplotlib  # noqa: F401

BACKENDS = ("jax", "torch")

AUTOENCODER = """
model ae {{
    input [784]
    Dense(32, activation=relu)
    Dense(784, activation=sigmoid)
}}
train ae {{
    recipe    = autoencoder(noise={noise})
    data      = mnist(validation_split=0.25)
    loss      = {loss}
    optimizer = adam(lr=3e-3)
    batch     = 64
    epochs    = {epochs}
    seed      = 2
    {metrics}
}}
"""


def write(tmp_path: Path, text: str, name: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def autoencoder_spec(tmp_path: Path, noise=0.3, loss="binary_cross_entropy", epochs=2, metrics="") -> str:
    return write(tmp_path, AUTOENCODER.format(noise=noise, loss=loss, epochs=epochs, metrics=metrics), "ae.spec")


def run(spec: str, backend: str, out: Path, limit: int, on_epoch_end=None, **kw):
    return train_model(spec, None, Options(backend=backend, quiet=True, out=str(out), limit=limit, **kw),
                       on_epoch_end=on_epoch_end)


def rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def assert_close(got: dict, want: dict, atol: float = 1e-4) -> None:
    assert got.keys() == want.keys()
    for key, value in want.items():
        np.testing.assert_allclose(got[key], value, rtol=0, atol=atol, err_msg=key)


# ---------------------------------------------------------------- autoencoder


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_autoencoder_run_learns_and_writes_its_pictures(tmp_path, backend):
    spec = autoencoder_spec(tmp_path)
    result = run(spec, backend, tmp_path / "run", limit=512)
    d = result.run_dir
    history = rows(d)
    assert [set(r) for r in history] == [{"epoch", "loss", "val_loss", "seconds", "samples_per_second"}] * 2
    assert all(np.isfinite(r["loss"]) and np.isfinite(r["val_loss"]) for r in history)
    assert history[1]["loss"] < history[0]["loss"]
    for name in ("samples/epoch-001.png", "samples/epoch-002.png", "reconstructions.png", "weights.safetensors",
                 "curves.png", "result.json"):
        assert (d / name).is_file(), name
    saved = json.loads((d / "result.json").read_text())
    assert saved["recipe"] == "autoencoder" and saved["noise"] == 0.3
    assert np.isfinite(saved["test_loss"]) and "test_accuracy" not in saved
    assert saved["train_samples"] == 384


@pytest.mark.parametrize("noise,loss", [(0.3, "binary_cross_entropy"), (0.0, "mse")])
def test_an_autoencoder_trains_alike_on_both_backends(tmp_path, noise, loss):
    """Same seed: same initial weights, batch order and input noise, so a few
    steps give the same weights on both backends. `metrics = [accuracy]` is
    Keras's per-pixel binary accuracy with binary cross-entropy, and ignored
    with mse (as for a supervised regression)."""
    spec = autoencoder_spec(tmp_path, noise=noise, loss=loss, epochs=1, metrics="metrics = [accuracy]")
    on = {backend: run(spec, backend, tmp_path / backend, limit=320) for backend in BACKENDS}
    assert_close(on["torch"].weights, on["jax"].weights)
    assert on["torch"].result["test_loss"] == pytest.approx(on["jax"].result["test_loss"], rel=1e-4)
    accuracy = on["jax"].result.get("test_accuracy")
    if loss == "binary_cross_entropy":
        assert 0.0 <= accuracy <= 1.0 and "val_accuracy" in on["jax"].history[0]
        assert on["torch"].result["test_accuracy"] == pytest.approx(accuracy, abs=1e-4)
    else:
        assert accuracy is None and "accuracy" not in on["jax"].history[0]


def test_an_autoencoder_run_resumes_on_the_other_backend_and_evaluates(tmp_path):
    spec = autoencoder_spec(tmp_path)
    whole = run(spec, "jax", tmp_path / "whole", limit=256)

    def stop(epoch, row):
        if epoch == 0:
            raise KeyboardInterrupt

    with pytest.raises(Interrupted):
        run(spec, "jax", tmp_path / "cut", limit=256, on_epoch_end=stop)
    resumed = train_model(spec, None, Options(backend="torch", quiet=True, resume=str(tmp_path / "cut")))
    assert [r["epoch"] for r in resumed.history] == [1, 2]
    assert resumed.result["backends"] == ["jax", "torch"]
    assert_close(resumed.weights, whole.weights)

    weights = str(whole.run_dir / "weights.safetensors")
    for backend in BACKENDS:
        evaluated = evaluate_weights(spec, None, weights, backend)
        assert evaluated["test_loss"] == pytest.approx(whole.result["test_loss"], rel=1e-4)


# ---------------------------------------------------------------- gan

GAN = """
model g {
    input [8]
    Dense(32)
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
    epochs    = 2
    seed      = 3
}
"""
GAN_LIMIT = 192  # 3 steps an epoch
GAN_ROW = {"epoch", "d_loss", "g_loss", "d_real", "d_fake", "seconds", "samples_per_second"}
GAN_GROUPS = {"generator", "discriminator", "generator_optimizer", "discriminator_optimizer"}


@pytest.fixture(scope="module")
def gan_runs(tmp_path_factory):
    """A short run of the GAN spec on each backend, from one seed."""
    tmp = tmp_path_factory.mktemp("gan")
    spec = write(tmp, GAN, "gan.spec")
    return spec, {backend: run(spec, backend, tmp / backend, limit=GAN_LIMIT) for backend in BACKENDS}


def discriminator_weights(run_dir: Path) -> dict:
    from specc.weights import load_weights

    return load_weights(run_dir / "discriminator.safetensors")


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_gan_run_keeps_its_losses_pictures_and_scores(gan_runs, backend):
    _, runs = gan_runs
    d = runs[backend].run_dir
    history = rows(d)
    assert [set(r) for r in history] == [GAN_ROW] * 2
    assert all(np.isfinite(r[k]) for r in history for k in ("d_loss", "g_loss"))
    assert all(0.0 <= r[k] <= 1.0 for r in history for k in ("d_real", "d_fake"))
    for name in ("samples/epoch-001.png", "samples/epoch-002.png", "samples.png", "weights.safetensors",
                 "discriminator.safetensors", "curves.png", "summary.txt"):
        assert (d / name).is_file(), name
    result = json.loads((d / "result.json").read_text())
    assert result["recipe"] == "gan" and result["discriminator"] == "d" and result["latent"] == 8
    assert 1.0 <= result["mnist_is"] <= 10.0 and result["mnist_fid"] > 0.0
    assert result["scored_samples"] == 10_000 and result["train_samples"] == GAN_LIMIT
    state = json.loads((d / "checkpoint-0002" / "state.json").read_text())
    assert set(state["groups"]) == GAN_GROUPS
    assert set(runs[backend].weights) == {"dense_1/kernel", "dense_1/bias", "batch_norm_1/gamma", "batch_norm_1/beta",
                                          "batch_norm_1/moving_mean", "batch_norm_1/moving_variance",
                                          "dense_2/kernel", "dense_2/bias"}
    assert "Model: \"d\"" in (d / "summary.txt").read_text()


def test_a_gan_trains_alike_on_both_backends(gan_runs):
    """Same seed: same initial weights, batch order and latent noise; the
    steps give the same generator and discriminator and the same curves."""
    _, runs = gan_runs
    assert_close(runs["torch"].weights, runs["jax"].weights)
    assert_close(discriminator_weights(runs["torch"].run_dir), discriminator_weights(runs["jax"].run_dir))
    for got, want in zip(runs["torch"].history, runs["jax"].history):
        for key in ("d_loss", "g_loss", "d_real", "d_fake"):
            assert got[key] == pytest.approx(want[key], rel=1e-4, abs=1e-6), key


def test_a_gan_run_resumes_on_the_other_backend(gan_runs, tmp_path):
    spec, runs = gan_runs

    def stop(epoch, row):
        if epoch == 0:
            raise KeyboardInterrupt

    with pytest.raises(Interrupted):
        run(spec, "torch", tmp_path / "cut", limit=GAN_LIMIT, on_epoch_end=stop)
    resumed = train_model(spec, None, Options(backend="jax", quiet=True, resume=str(tmp_path / "cut")))
    assert [r["epoch"] for r in resumed.history] == [1, 2]
    assert resumed.result["backends"] == ["torch", "jax"]
    assert_close(resumed.weights, runs["torch"].weights)
    assert_close(discriminator_weights(resumed.run_dir), discriminator_weights(runs["torch"].run_dir))


def test_eval_and_sample_use_the_saved_generator(gan_runs, tmp_path, capsys):
    from specc.cli import main

    spec, runs = gan_runs
    weights = str(runs["jax"].run_dir / "weights.safetensors")
    scores = evaluate_weights(spec, None, weights, "torch")
    assert scores["mnist_is"] == pytest.approx(runs["jax"].result["mnist_is"], rel=1e-3)
    assert scores["mnist_fid"] == pytest.approx(runs["jax"].result["mnist_fid"], rel=1e-3)
    assert main(["eval", spec, "--weights", weights, "--backend", "jax"]) == 0
    assert "mnist_is" in capsys.readouterr().out
    out = tmp_path / "grid.png"
    assert main(["sample", spec, "--weights", weights, "-n", "16", "-o", str(out), "--backend", "torch"]) == 0
    assert out.stat().st_size > 0
    assert main(["sample", spec, "--weights", str(runs["jax"].run_dir / "discriminator.safetensors")]) == 1
    assert "specc: error:" in capsys.readouterr().err
