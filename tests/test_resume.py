"""Checkpoints that move between backends, early stopping across a resume,
damaged run directories, `metrics` honoured, and non-finite losses named."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from specc.errors import UserError
from specc.runner import Interrupted, Options, RunError, evaluate_weights, train_model

pytest.importorskip("jax")
pytest.importorskip("torch")

# Conv + dense, no dropout (each backend draws its own masks), Adam.
SPEC = """
model small {{
    input [1, 8, 8]
    Conv2D(4, kernel=3, padding=same, activation=relu)
    MaxPool(2)
    Flatten()
    Dense(16, activation=relu)
    Dense(4, activation=softmax)
}}
train small {{
    data      = synthetic(samples=240, classes=4, validation_split=0.2)
    loss      = cross_entropy
    optimizer = adam(lr=3e-3)
    schedule  = {schedule}
    batch     = 32
    epochs    = {epochs}
    {metrics}
    {patience}
    seed      = 1
}}
"""


def write_spec(tmp_path: Path, epochs=2, schedule="constant", metrics="metrics = [accuracy]", patience="",
               name="small.spec") -> str:
    path = tmp_path / name
    path.write_text(SPEC.format(epochs=epochs, schedule=schedule, metrics=metrics, patience=patience))
    return str(path)


def stop_after(last_epoch: int):
    def stop(epoch, row):
        if epoch == last_epoch:
            raise KeyboardInterrupt
    return stop


def cut_run(spec: str, backend: str, out: Path, after_epoch: int = 0) -> Path:
    """A run of `spec` on `backend` interrupted after epoch `after_epoch` (0-based)."""
    with pytest.raises(Interrupted):
        train_model(spec, None, Options(backend=backend, quiet=True, out=str(out)),
                    on_epoch_end=stop_after(after_epoch))
    return out


def resume(run_dir: Path, backend: str, copy_to: Path | None = None):
    if copy_to is not None:
        shutil.copytree(run_dir, copy_to)
        run_dir = copy_to
    return train_model(_spec_of(run_dir), None, Options(backend=backend, quiet=True, resume=str(run_dir)))


def _spec_of(run_dir: Path) -> str:
    return json.loads((run_dir / "run.json").read_text())["spec"]


def assert_weights_close(got: dict, want: dict, rtol: float = 1e-5) -> None:
    assert got.keys() == want.keys()
    for key, value in want.items():
        scale = max(float(np.max(np.abs(value))), 1e-6)
        np.testing.assert_allclose(got[key], value, rtol=rtol, atol=rtol * scale, err_msg=key)


# ---------------------------------------------------------------- cross-backend resume


@pytest.mark.parametrize("first,then", [("jax", "torch"), ("torch", "jax")])
def test_a_run_resumes_on_the_other_backend(tmp_path, first, then):
    spec = write_spec(tmp_path)
    cut = cut_run(spec, first, tmp_path / "cut")
    same = resume(cut, first, copy_to=tmp_path / "same")
    other = resume(cut, then, copy_to=tmp_path / "other")
    assert [r["epoch"] for r in other.history] == [1, 2]
    assert not all(np.array_equal(other.weights[k], same.weights[k]) for k in same.weights), \
        "the resumed epoch really ran on the other backend"
    assert_weights_close(other.weights, same.weights)

    result = json.loads((other.run_dir / "result.json").read_text())
    assert result["backend"] == then and result["backends"] == [first, then]
    assert result["epochs"] == 2 and 0.0 <= result["test_accuracy"] <= 1.0
    for key in ("model", "params", "test_loss", "train_seconds", "train_samples", "optimizer", "stopped_early"):
        assert result[key] is not None, key
    rows = [json.loads(line) for line in (other.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    assert (other.run_dir / "weights.safetensors").is_file() and (other.run_dir / "curves.png").is_file()


def test_a_cross_backend_resume_through_the_cli_finishes_the_run(tmp_path, capsys):
    from specc.cli import main

    spec = write_spec(tmp_path, epochs=3)
    cut = cut_run(spec, "jax", tmp_path / "cut")
    assert main(["train", spec, "--backend", "torch", "--resume", str(cut), "--quiet"]) == 0
    result = json.loads((cut / "result.json").read_text())
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == result
    assert result["backends"] == ["jax", "torch"] and result["epochs"] == 3
    assert json.loads((cut / "checkpoint.json").read_text())["epoch"] == 2


# ---------------------------------------------------------------- early stopping across a resume


def test_early_stopping_keeps_the_best_weights_across_a_resume(tmp_path):
    # 6 steps an epoch; from epoch 3 on the learning rate is 10,000 times larger,
    # so the validation loss gets worse after the resume and the run stops.
    spec = write_spec(tmp_path, epochs=8, schedule="step(every=12, factor=10000)", patience="patience = 2")
    whole = train_model(spec, None, Options(backend="jax", quiet=True, out=str(tmp_path / "whole")))
    val = [r["val_loss"] for r in whole.history]
    assert val[1] < val[0] and min(val[2:]) > val[1], f"the case needs the best epoch to be 2: {val}"
    assert whole.result["stopped_early"] and len(whole.history) == 4

    cut = cut_run(spec, "jax", tmp_path / "cut", after_epoch=1)
    best = _checkpoint_arrays(cut, "weights")
    resumed = resume(cut, "jax")
    assert resumed.result["stopped_early"] and [r["epoch"] for r in resumed.history] == [1, 2, 3, 4]
    for key, value in best.items():
        np.testing.assert_array_equal(resumed.weights[key], value, err_msg=key)
        np.testing.assert_array_equal(whole.weights[key], value, err_msg=key)


def test_the_best_weights_are_in_the_checkpoint(tmp_path):
    spec = write_spec(tmp_path, epochs=3, schedule="step(every=12, factor=10000)", patience="patience = 2")
    run = train_model(spec, None, Options(backend="torch", quiet=True, out=str(tmp_path / "run")))
    assert [r["epoch"] for r in run.history] == [1, 2, 3] and not run.result["stopped_early"]
    assert np.argmin([r["val_loss"] for r in run.history]) == 1
    best, last = _checkpoint_arrays(run.run_dir, "best_weights"), _checkpoint_arrays(run.run_dir, "weights")
    assert best.keys() == last.keys()
    assert not all(np.array_equal(best[k], last[k]) for k in best), "epoch 2's weights, not the last ones"


def _checkpoint_arrays(run_dir: Path, group: str) -> dict:
    from specc.weights import load_weights

    latest = json.loads((run_dir / "checkpoint.json").read_text())["latest"]
    return load_weights(run_dir / latest / f"{group}.safetensors")


# ---------------------------------------------------------------- metrics = [...] honoured


@pytest.mark.parametrize("backend", ["jax", "torch"])
@pytest.mark.parametrize("metrics", ["", "metrics = []", "metrics = [accuracy]"])
def test_only_the_metrics_asked_for_are_reported(tmp_path, backend, metrics):
    spec = write_spec(tmp_path, epochs=1, metrics=metrics)
    run = train_model(spec, None, Options(backend=backend, quiet=True, out=str(tmp_path / "run")))
    rows = [json.loads(line) for line in (run.run_dir / "metrics.jsonl").read_text().splitlines()]
    result = json.loads((run.run_dir / "result.json").read_text())
    evaluated = evaluate_weights(spec, None, str(run.run_dir / "weights.safetensors"), backend)
    assert (run.run_dir / "curves.png").is_file()
    if "accuracy" in metrics:
        assert {"accuracy", "val_accuracy"} <= set(rows[0])
        assert 0.0 <= result["test_accuracy"] <= 1.0 and evaluated["test_accuracy"] is not None
    else:
        assert not {"accuracy", "val_accuracy"} & set(rows[0]), rows[0]
        assert "test_accuracy" in result and result["test_accuracy"] is None
        assert evaluated["test_accuracy"] is None
        assert {"loss", "val_loss"} <= set(rows[0])


def test_eval_without_accuracy_prints_only_the_loss(tmp_path, capsys):
    from specc.cli import main

    spec = write_spec(tmp_path, epochs=1, metrics="")
    run = train_model(spec, None, Options(backend="torch", quiet=True, out=str(tmp_path / "run")))
    assert main(["eval", spec, "--weights", str(run.run_dir / "weights.safetensors"), "--backend", "torch"]) == 0
    out = capsys.readouterr().out
    assert "test loss" in out and "accuracy" not in out
    assert main(["plot", str(run.run_dir), "--out", str(tmp_path / "c.png")]) == 0
    assert (tmp_path / "c.png").stat().st_size > 0


# ---------------------------------------------------------------- damaged run directories


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A complete 1-epoch torch run (its checkpoint is what the cases damage)."""
    tmp = tmp_path_factory.mktemp("base")
    spec = write_spec(tmp, epochs=1)
    train_model(spec, None, Options(backend="torch", quiet=True, out=str(tmp / "run")))
    return tmp / "run"


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _write(text: str):
    return lambda path: path.write_text(text)


def _edit_json(change):
    return lambda path: path.write_text(json.dumps(change(json.loads(path.read_text()))))


def _set_array(key: str, shape: tuple[int, ...]):
    def damage(path: Path) -> None:
        from safetensors.numpy import load_file, save_file

        save_file({**load_file(str(path)), key: np.zeros(shape, np.float32)}, str(path))
    return damage


def _old_format(path: Path) -> None:  # the optimiser state of specc before it was canonical
    from safetensors.numpy import save_file

    save_file({"opt/0000": np.zeros(1, np.float32), "loop/step": np.zeros(1, np.int64)}, str(path))


def _set_values(key: str, value):
    def damage(path: Path) -> None:
        from safetensors.numpy import load_file, save_file

        arrays = load_file(str(path))
        save_file({**arrays, key: np.full_like(arrays[key], value)}, str(path))
    return damage


def _edit_train(**changes):
    return _edit_json(lambda s: {**s, "run": {**s["run"], "train": {**s["run"]["train"], **changes}}})


STATE, WEIGHTS, OPTIMIZER = (f"checkpoint-0001/{name}" for name in
                             ("state.json", "weights.safetensors", "optimizer.safetensors"))
DAMAGE = {  # case: (file, how it is damaged, what the message says)
    "pointer is not JSON": ("checkpoint.json", _write("{not json"), "not valid JSON"),
    "pointer names no folder": ("checkpoint.json", _write('{"latest": "checkpoint-0009"}'),
                                "checkpoint-0009, which does not exist"),
    "pointer names no checkpoint": ("checkpoint.json", _write('{"latest": "../elsewhere"}'),
                                    "does not name a checkpoint folder"),
    "state is not JSON": (STATE, _write('{"epoch": 0,'), "not valid JSON"),
    "state lacks keys": (STATE, _edit_json(lambda s: {"epoch": 0, "groups": s["groups"]}), "lacks history, run"),
    "state has a bad train block": (STATE, _edit_json(lambda s: {**s, "run": {"model": "small"}}),
                                    "does not describe a specc run"),
    "weights truncated": (WEIGHTS, _truncate, "cannot be read|not a readable"),
    "optimizer not safetensors": (OPTIMIZER, _write("PK\x03\x04 a zip, not safetensors"),
                                  "cannot be read|not a readable"),
    "weights missing": (WEIGHTS, Path.unlink, "is missing"),
    "weights of the wrong shape": (WEIGHTS, _set_array("dense_1/kernel", (3, 16)),
                                   r"dense_1/kernel has shape \[3, 16\], expected \[64, 16\]"),
    "optimizer state of the wrong shape": (OPTIMIZER, _set_array("adam/v/conv2d_1/kernel", (4,)),
                                           r"adam/v/conv2d_1/kernel has shape \[4\]"),
    "optimizer state of another layout": (OPTIMIZER, _old_format, "unexpected (loop/step|opt/0000)"),
    # values no run saves: a trainer would carry them on (and blame the learning rate) or fail on them
    "weights hold NaN": (WEIGHTS, _set_values("dense_1/kernel", np.nan), "dense_1/kernel holds NaN or infinite"),
    "a negative step count": (OPTIMIZER, _set_values("adam/step", -5), r"adam/step holds a negative count \(-5\)"),
    # a hand-edited state.json: what the checker never lets through
    "state has an unknown optimizer": (STATE, _edit_train(optimizer={"name": "nope", "args": {}}),
                                       "its train block: unknown optimizer 'nope'"),
    "state has a negative batch": (STATE, _edit_train(batch=-1),
                                   "its train block: batch is -1, not a positive integer"),
    "state has an optimizer argument out of range": (STATE, _edit_train(optimizer={"name": "adam", "args": {"lr": -2}}),
                                                "adam\\(\\): lr must be positive"),
    "state says a later epoch": (STATE, _edit_json(lambda s: {**s, "epoch": 6}),
                                 "says epoch 7 was the last completed, but its history holds 1 epoch"),
}


def _damaged_copy(finished_run: Path, tmp_path: Path, case: str) -> tuple[Path, Path]:
    run_dir = tmp_path / "run"
    shutil.copytree(finished_run, run_dir)
    relative, damage, _ = DAMAGE[case]
    damage(run_dir / relative)
    return run_dir, run_dir / relative


@pytest.mark.parametrize("case", list(DAMAGE))
def test_a_damaged_checkpoint_is_named_with_what_to_do(finished_run, tmp_path, case):
    run_dir, damaged = _damaged_copy(finished_run, tmp_path, case)
    with pytest.raises(UserError, match=DAMAGE[case][2]) as info:
        train_model(_spec_of(run_dir), None, Options(backend="jax", quiet=True, resume=str(run_dir)))
    assert str(damaged) in info.value.message
    if damaged.name == "checkpoint.json":  # the checkpoint itself is whole: the hint says how to point at it
        assert "checkpoint-0001" in info.value.hint
    else:  # the only checkpoint: nothing older to fall back to
        assert "start it again" in info.value.hint


def test_the_hint_offers_an_older_complete_checkpoint(finished_run, tmp_path):
    run_dir, _ = _damaged_copy(finished_run, tmp_path, "weights truncated")
    shutil.copytree(finished_run / "checkpoint-0001", run_dir / "checkpoint-0000")
    with pytest.raises(UserError) as info:
        train_model(_spec_of(run_dir), None, Options(backend="torch", quiet=True, resume=str(run_dir)))
    assert "checkpoint-0000" in info.value.hint and str(run_dir / "checkpoint.json") in info.value.hint


def test_missing_or_foreign_run_directories(finished_run, tmp_path):
    spec = _spec_of(finished_run)
    with pytest.raises(UserError, match=f"{tmp_path / 'nowhere'}.*no such directory|no such run directory"):
        train_model(spec, None, Options(backend="torch", quiet=True, resume=str(tmp_path / "nowhere")))
    from specc.checkpoint import load_checkpoint

    with pytest.raises(UserError, match=f"no such run directory: {tmp_path / 'nowhere'}"):
        load_checkpoint(tmp_path / "nowhere")
    with pytest.raises(RunError, match="not a specc run directory"):
        train_model(spec, None, Options(backend="torch", quiet=True, resume=str(tmp_path)))
    started = tmp_path / "started"  # killed in its first epoch: run.json only
    started.mkdir()
    (started / "run.json").write_text("{\"model\": ")
    with pytest.raises(UserError, match=f"{started / 'run.json'} is not valid JSON"):
        train_model(spec, None, Options(backend="torch", quiet=True, resume=str(started)))


@pytest.mark.parametrize("case", ["weights truncated", "state is not JSON", "weights of the wrong shape"])
def test_the_cli_reports_a_damaged_run_in_one_line(finished_run, tmp_path, capsys, case):
    from specc.cli import main

    run_dir, damaged = _damaged_copy(finished_run, tmp_path, case)
    assert main(["train", _spec_of(run_dir), "--backend", "torch", "--resume", str(run_dir), "--quiet"]) == 1
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert lines[0].startswith("specc: error: ") and str(damaged) in lines[0]
    assert "Traceback" not in err and all(line.startswith(("specc: error: ", "hint: ")) for line in lines)


def _snapshot(run_dir: Path) -> dict[str, bytes]:
    return {str(f.relative_to(run_dir)): f.read_bytes() for f in sorted(run_dir.rglob("*")) if f.is_file()}


def test_damaged_metrics_rows_are_refused_before_the_run_goes_on(finished_run, tmp_path, capsys):
    from specc.cli import main

    run_dir = tmp_path / "run"
    shutil.copytree(finished_run, run_dir)
    (run_dir / "metrics.jsonl").write_text('{"epoch": 1, "loss": 0.5}\nnot json\n')
    before = _snapshot(run_dir)
    status = main(["train", _spec_of(run_dir), "--resume", str(run_dir), "--epochs", "2", "--quiet"])
    err = capsys.readouterr().err
    assert status == 1 and err.startswith(f"specc: error: cannot resume: {run_dir / 'metrics.jsonl'} line 2 "), err
    assert "Traceback" not in err and _snapshot(run_dir) == before


def test_a_model_of_the_same_name_and_shapes_but_another_loss_is_refused(finished_run, tmp_path):
    """Same weight shapes, but a tanh output the run's cross-entropy was never checked against: the
    fingerprint names the change (a run without one: tests/test_reliability_resume.py)."""
    run_dir = tmp_path / "run"
    shutil.copytree(finished_run, run_dir)
    other = Path(_spec_of(run_dir)).read_text().replace("Dense(4, activation=softmax)", "Dense(4, activation=tanh)")
    (tmp_path / "tanh.spec").write_text(other.replace("loss      = cross_entropy", "loss      = mse"))
    before = _snapshot(run_dir)
    with pytest.raises(RunError, match="not the model the run trained: dense_2: activation softmax -> tanh"):
        train_model(str(tmp_path / "tanh.spec"), None, Options(backend="jax", quiet=True, resume=str(run_dir)))
    assert _snapshot(run_dir) == before


GAN = """
model small {
    input [3]
    Dense(6, activation=tanh)
}
model critic {
    input [6]
    Dense(1, activation=sigmoid)
}
train small {
    recipe    = gan(critic, latent=3)
    data      = npz("data.npz")
    optimizer = adam(lr=1e-3)
    batch     = 8
    epochs    = 1
}
"""


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_a_gan_run_resumed_with_a_spec_without_its_discriminator(tmp_path, monkeypatch, capsys, backend):
    from specc.cli import main

    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    np.savez("data.npz", x_train=rng.random((16, 6), np.float32), y_train=np.zeros(16, int),
             x_test=rng.random((8, 6), np.float32), y_test=np.zeros(8, int))
    Path("gan.spec").write_text(GAN)
    train_model("gan.spec", None, Options(backend="jax", quiet=True, out="run"))
    Path("classifier.spec").write_text(GAN.split("model critic")[0] + """
train small {
    data = npz("data.npz")
    loss = mse
}
""")
    before = _snapshot(tmp_path / "run")
    assert main(["train", "classifier.spec", "--backend", backend, "--resume", "run", "--epochs", "2"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("specc: error: run trains small with gan(discriminator=critic), but classifier.spec "
                          "has no model 'critic'\nhint: resume with the spec the run was started with (gan.spec)"), err
    assert _snapshot(tmp_path / "run") == before
    with pytest.raises(RunError, match="has no model 'critic'"):  # the Python API says the same
        train_model("classifier.spec", None, Options(backend=backend, quiet=True, resume="run", epochs=2))
    assert _snapshot(tmp_path / "run") == before


# ---------------------------------------------------------------- non-finite losses on JAX


@pytest.mark.parametrize("value,name", [(-np.inf, "-inf"), (np.inf, "inf"), (np.nan, "nan")])
def test_the_jax_trainer_names_the_non_finite_loss(tmp_path, monkeypatch, value, name):
    """No loss of specc's can reach -inf, so the per-sample loss is replaced:
    the trainer must tell -inf from inf and NaN, as the torch trainer does."""
    import jax.numpy as jnp

    from specc.backends.jax_flax import train as jax_train

    def loss(plan, out, y):
        return jnp.full(out.shape[:1], value, jnp.float32) + 0.0 * jnp.sum(out)

    monkeypatch.setattr(jax_train, "per_sample_loss", loss)
    spec = write_spec(tmp_path, epochs=1)
    with pytest.raises(RunError, match=rf"the loss became {name} at epoch 1, step 1 "):
        train_model(spec, None, Options(backend="jax", quiet=True, out=str(tmp_path / "run")))
