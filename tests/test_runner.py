"""The shared runner on the JAX backend, and what must hold across backends:
short real runs, a complete run directory, resume, the NaN guard, bad data,
cross-backend eval, identical initial weights and batch order."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest

import specc
from specc import data
from specc.runner import Interrupted, Options, RunError, train_model

import jax

SPEC = """
model small {
    input [1, 8, 8]
    Conv2D(4, kernel=3, padding=same, activation=relu)
    MaxPool(2)
    Flatten()
    Dense(16, activation=relu)
    Dropout(0.1)
    Dense(4, activation=softmax)
}
train small {
    data      = synthetic(samples=600, classes=4, validation_split=0.2)
    loss      = cross_entropy
    optimizer = adam(lr=3e-3)
    batch     = 50
    epochs    = 3
    metrics   = [accuracy]
    seed      = 1
}
"""


@pytest.fixture
def spec(tmp_path) -> str:
    path = tmp_path / "small.spec"
    path.write_text(SPEC)
    return str(path)


def test_short_run_learns_and_writes_a_complete_run_directory(spec, tmp_path):
    run = train_model(spec, None, Options(backend="jax", quiet=True, out=str(tmp_path / "run")))
    losses = [row["loss"] for row in run.history]
    assert losses[-1] < losses[0]
    d = run.run_dir
    for name in ("result.json", "metrics.jsonl", "weights.safetensors", "summary.txt", "curves.png"):
        assert (d / name).is_file(), name
    result = json.loads((d / "result.json").read_text())
    for key in ("backend", "model", "params", "epochs", "test_accuracy", "test_loss", "train_seconds",
                "train_samples_per_second"):
        assert result[key] is not None, key
    assert result["params"] == specc.load(spec)["small"].params
    assert len((d / "metrics.jsonl").read_text().splitlines()) == 3
    assert (result["devices"], result["processes"]) == (1, 1)
    assert 0 < result["epoch_overhead_fraction"] < 1  # validation, checkpoints, rows, pictures
    assert "Total params" in (d / "summary.txt").read_text()


def test_resume_after_an_interrupted_run_gives_the_same_weights(spec, tmp_path):
    whole = train_model(spec, None, Options(backend="jax", quiet=True, out=str(tmp_path / "whole")))

    def crash(epoch, row):
        if epoch == 0:
            raise KeyboardInterrupt

    with pytest.raises(Interrupted, match="--resume"):
        train_model(spec, None, Options(backend="jax", quiet=True, out=str(tmp_path / "cut")), on_epoch_end=crash)
    resumed = train_model(spec, None, Options(backend="jax", quiet=True, resume=str(tmp_path / "cut")))
    assert [r["epoch"] for r in resumed.history] == [1, 2, 3]
    for key, value in whole.weights.items():
        np.testing.assert_array_equal(resumed.weights[key], value, err_msg=key)


def test_resume_of_a_run_killed_in_its_first_epoch_starts_it_again(spec, tmp_path, monkeypatch):
    import specc.runner

    def killed(*args, **kwargs):  # the process dies before the first checkpoint is written
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(specc.runner, "save_checkpoint", killed)
        with pytest.raises(Interrupted):
            train_model(spec, None, Options(backend="jax", quiet=True, out=str(tmp_path / "cut"), limit=400))
    resumed = train_model(spec, None, Options(backend="jax", quiet=True, resume=str(tmp_path / "cut")))
    assert [r["epoch"] for r in resumed.history] == [1, 2, 3]
    assert resumed.result["train_samples"] == 320  # the --limit of the run it continues (400 less validation)
    with pytest.raises(RunError, match="not a specc run directory"):
        train_model(spec, None, Options(backend="jax", quiet=True, resume=str(tmp_path)))


def test_nan_loss_stops_the_run_naming_epoch_and_step(tmp_path):
    path = tmp_path / "nan.spec"
    path.write_text(SPEC.replace("adam(lr=3e-3)", "sgd(lr=1e30)").replace("cross_entropy", "mse")
                    .replace("activation=softmax", "activation=linear"))
    with pytest.raises(RunError, match=r"at epoch 1, step \d+"):
        train_model(str(path), None, Options(backend="jax", quiet=True, out=str(tmp_path / "run")))


def test_cross_backend_eval_gives_the_same_accuracy(spec, tmp_path):
    import torch  # noqa: F401
    from specc.runner import evaluate_weights

    run = train_model(spec, None, Options(backend="jax", quiet=True, epochs=1, out=str(tmp_path / "run")))
    weights = str(run.run_dir / "weights.safetensors")
    on_jax = evaluate_weights(spec, None, weights, "jax")
    on_torch = evaluate_weights(spec, None, weights, "torch")
    assert on_jax["test_accuracy"] == pytest.approx(run.result["test_accuracy"])
    assert on_torch["test_accuracy"] == pytest.approx(on_jax["test_accuracy"])
    assert on_torch["test_loss"] == pytest.approx(on_jax["test_loss"], rel=1e-4)


def test_same_initial_weights_and_batch_order_on_every_backend(spec):
    import torch  # noqa: F401
    from specc.backend import get
    from specc.plan import make_plan

    program = specc.load(spec)
    model, train = program["small"], program.trains["small"]
    plan = make_plan(model, train, 480)
    weights = specc.init_weights(model, train.seed)
    for name in ("jax", "torch"):
        got = get(name).trainer(model, plan, weights).get_weights()
        for key, value in weights.items():
            np.testing.assert_array_equal(got[key], value, err_msg=f"{name} {key}")
    # The order is made once, in numpy, from (seed, epoch): it cannot depend on the backend.
    assert np.array_equal(data.batch_order(480, 50, 1, 2), data.batch_order(480, 50, 1, 2))
    assert not np.array_equal(data.batch_order(480, 50, 1, 0), data.batch_order(480, 50, 1, 1))


def test_cli_train_bad_data_dir_and_corrupt_idx_are_clear_errors(tmp_path, capsys, monkeypatch):
    from specc.cli import main

    monkeypatch.setenv("SPECC_OFFLINE", "1")
    monkeypatch.setattr(data, "_package_mnist_dir", lambda: None)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    lenet = str(Path(__file__).resolve().parents[1] / "specs" / "lenet.spec")
    out = tmp_path / "run"
    assert main(["train", lenet, "--data-dir", str(tmp_path / "nowhere"), "--quiet", "--limit", "10",
                 "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "nowhere" in err and "Traceback" not in err
    assert not out.exists(), "a run that never started leaves no directory behind"

    bad = tmp_path / "bad"
    bad.mkdir()
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                 "t10k-labels-idx1-ubyte"):
        (bad / f"{name}.gz").write_bytes(gzip.compress(b"\x00\x00\x08\x03not really mnist"))
    assert main(["train", lenet, "--data-dir", str(bad), "--quiet", "--limit", "10"]) == 1
    err = capsys.readouterr().err
    assert str(bad) in err and "Traceback" not in err


def test_cli_train_needs_a_train_block(tmp_path, capsys):
    from specc.cli import main

    untrained = tmp_path / "untrained.spec"
    untrained.write_text(SPEC.split("train small")[0])
    assert main(["train", str(untrained), "--quiet"]) == 1
    assert "no train block" in capsys.readouterr().err


def test_epoch_overhead_is_the_steady_state_share():
    """result.json's epoch_overhead_fraction leaves out the session's first
    epoch (it also compiles the steps) when there are later ones."""
    from specc.loop import History, Outcome

    outcome = Outcome(History(), None)
    assert outcome.overhead_fraction is None
    outcome.epoch_times.append((20.0, 6.0))  # first epoch: compiles
    assert outcome.overhead_fraction == 0.3
    outcome.epoch_times += [(10.0, 0.5), (10.0, 1.5)]
    assert outcome.overhead_fraction == 0.1
