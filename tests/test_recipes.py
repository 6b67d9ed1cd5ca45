"""The autoencoder and GAN recipes end to end: short real runs on both
backends (finite losses, pictures, a complete result), cross-backend parity
of a few steps from one seed, resume, and `specc eval` / `specc sample`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from specc.runner import Interrupted, Options, evaluate_weights, train_model

pytest.importorskip("jax")
pytest.importorskip("torch")
pytest.importorskip("matplotlib")

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
}}
"""


def write(tmp_path: Path, text: str, name: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def autoencoder_spec(tmp_path: Path, noise=0.3, loss="binary_cross_entropy", epochs=2) -> str:
    return write(tmp_path, AUTOENCODER.format(noise=noise, loss=loss, epochs=epochs), "ae.spec")


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
    steps give the same weights on both backends."""
    spec = autoencoder_spec(tmp_path, noise=noise, loss=loss, epochs=1)
    on = {backend: run(spec, backend, tmp_path / backend, limit=320) for backend in BACKENDS}
    assert_close(on["torch"].weights, on["jax"].weights)
    assert on["torch"].result["test_loss"] == pytest.approx(on["jax"].result["test_loss"], rel=1e-4)


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
