"""Resuming a run: `--out DIR --resume DIR` naming the same directory is the
original command run again, and is accepted; run.json keeps each trained
model's fingerprint (sha256 of its canonical IR), and a resume whose spec
changed a model in any way is refused, naming the first difference. Runs
made before fingerprints still resume (the older checks apply)."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import specc
from specc.errors import UserError
from specc.fingerprint import canonical, difference, fingerprint
from specc.runner import Options, RunError, check_launch, train_model

pytest.importorskip("jax")
pytest.importorskip("torch")

SPEC = """
# a small CNN: its {comment}
model small {
    input [1, 8, 8]
    Conv2D(4, kernel=3, padding=same, activation=relu)
    BatchNorm()
    MaxPool(2)
    Dropout(0.25)
    Flatten()
    Dense(4, activation=softmax)
}
train small {
    data      = synthetic(samples=96, classes=4)
    loss      = cross_entropy
    optimizer = adam(lr=3e-3)
    batch     = 32
    epochs    = 1
    seed      = 1
}
"""

# A change to the model, and the difference a resume names.
CHANGES = {
    "stride": (("padding=same, activation=relu", "padding=same, stride=2, activation=relu"),
               "conv2d_1: stride [1, 1] -> [2, 2]"),
    "activation": (("padding=same, activation=relu", "padding=same, activation=gelu"),
                   "conv2d_1: activation relu -> gelu"),
    "padding": (("kernel=3, padding=same", "kernel=3, padding=[1, 1]"), None),  # the same model: same pads
    "explicit padding": (("kernel=3, padding=same", "kernel=3, padding=[2, 2]"),
                         "conv2d_1: padding [[1, 1], [1, 1]] -> [[2, 2], [2, 2]]"),
    "dropout rate": (("Dropout(0.25)", "Dropout(0.3)"), "dropout_1: rate 0.25 -> 0.3"),
    "epsilon": (("BatchNorm()", "BatchNorm(epsilon=1e-5)"), "batch_norm_1: epsilon 0.001 -> 1e-05"),
    "momentum": (("BatchNorm()", "BatchNorm(momentum=0.9)"), "batch_norm_1: momentum 0.99 -> 0.9"),
    "layer order": (("MaxPool(2)\n    Dropout(0.25)", "Dropout(0.25)\n    MaxPool(2)"),
                    "the layer order: max_pool_1 (MaxPool) came before dropout_1 (Dropout), now after it"),
    "a layer more": (("Flatten()\n", "Flatten()\n    Dense(8)\n"), "dense_1: units 4 -> 8"),
    "a layer less": (("    Dropout(0.25)\n", ""), "dropout_1 (Dropout) is gone, where the spec now has flatten_1 (Flatten)"),
    "bias": (("Dense(4, activation=softmax)", "Dense(4, activation=softmax, bias=false)"), "dense_1: bias true -> false"),
    "input": (("input [1, 8, 8]", "input [1, 10, 10]"), "input: shape [1, 8, 8] -> [1, 10, 10]"),
    "a name": (("    MaxPool(2)", "    pool: MaxPool(2)"), "pool (MaxPool) is new, where the run had max_pool_1 (MaxPool)"),
}


def spec_text(change: tuple[str, str] | None = None, comment: str = "first version") -> str:
    text = SPEC.replace("{comment}", comment)
    if change:
        assert change[0] in text
        text = text.replace(*change)
    return text


# ---------------------------------------------------------------- the fingerprint itself (front end only)


def test_the_fingerprint_ignores_where_and_how_the_model_is_written(tmp_path):
    first = specc.loads(spec_text(), "a.spec")["small"]
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "moved.spec").write_text(
        "let k = 3\n\n\n" + spec_text(comment="comments and blank lines moved everything")
        .replace("kernel=3", "kernel = k").replace("    Dropout(0.25)\n", "    Dropout(1 / 4)   # a quarter\n"))
    moved = specc.load(tmp_path / "sub" / "moved.spec")["small"]
    assert [layer.line for layer in moved.layers] != [layer.line for layer in first.layers]
    assert fingerprint(moved) == fingerprint(first)
    assert fingerprint(first).startswith("sha256:") and len(fingerprint(first)) == 7 + 64


def test_the_fingerprint_is_the_sha256_of_specc_ir_without_spans(tmp_path, capsys):
    """Anyone can recompute it from `specc ir`: the model's JSON without file,
    line and column, with sorted keys and no spaces."""
    from specc import cli

    path = tmp_path / "a.spec"
    path.write_text(spec_text())
    assert cli.main(["ir", str(path)]) == 0
    (model,) = json.loads(capsys.readouterr().out)["models"]
    for layer in model["layers"]:
        for key in ("file", "line", "column"):
            layer.pop(key)
    text = json.dumps(model, sort_keys=True, separators=(",", ":"))
    assert fingerprint(specc.load(path)["small"]) == "sha256:" + hashlib.sha256(text.encode()).hexdigest()


@pytest.mark.parametrize("case", CHANGES)
def test_every_change_to_a_model_changes_the_fingerprint_and_is_named(case):
    change, words = CHANGES[case]
    old, new = (specc.loads(spec_text(c), "a.spec")["small"] for c in (None, change))
    if words is None:  # written another way, the same model
        assert fingerprint(old) == fingerprint(new)
        return
    assert fingerprint(old) != fingerprint(new)
    assert difference(canonical(old), canonical(new)) == words


# ---------------------------------------------------------------- resuming a run


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A complete 1-epoch torch run of SPEC (the cases copy it)."""
    tmp = tmp_path_factory.mktemp("finished")
    (tmp / "a.spec").write_text(spec_text())
    train_model(str(tmp / "a.spec"), None, Options(backend="torch", quiet=True, out=str(tmp / "run")))
    return tmp / "run"


def _copy(finished: Path, tmp_path: Path) -> Path:
    shutil.copytree(finished, tmp_path / "run")
    return tmp_path / "run"


def _snapshot(run_dir: Path) -> dict[str, bytes]:
    return {str(f.relative_to(run_dir)): f.read_bytes() for f in sorted(run_dir.rglob("*")) if f.is_file()}


def _states(run_dir: Path) -> list[Path]:
    return sorted(run_dir.glob("checkpoint-*/state.json"))


def test_run_json_and_checkpoints_keep_the_fingerprint(finished):
    model = specc.load(finished.parent / "a.spec")["small"]
    run = json.loads((finished / "run.json").read_text())
    assert run["models"]["small"]["fingerprint"] == fingerprint(model)
    assert run["models"]["small"]["ir"] == canonical(model)
    for state in _states(finished):
        assert json.loads(state.read_text())["run"]["models"]["small"]["fingerprint"] == fingerprint(model)


@pytest.mark.parametrize("case", ["stride", "activation", "dropout rate", "epsilon", "layer order", "a layer less"])
def test_a_resume_with_a_changed_model_is_refused_saying_what_changed(finished, tmp_path, capsys, case):
    from specc.cli import main

    run_dir = _copy(finished, tmp_path)
    change, words = CHANGES[case]
    (tmp_path / "changed.spec").write_text(spec_text(change))
    before = _snapshot(run_dir)
    status = main(["train", str(tmp_path / "changed.spec"), "--backend", "jax", "--resume", str(run_dir),
                   "--epochs", "2", "--quiet"])
    err = capsys.readouterr().err
    assert status == 1, err
    assert err.splitlines() == [
        f"specc: error: cannot resume {run_dir}: model small in {tmp_path / 'changed.spec'} is not the model the "
        f"run trained: {words}",
        f"hint: resume with the spec the run was started with ({finished.parent / 'a.spec'}) as it was then, "
        "or train the changed model as a new run (without --resume)"], err
    assert _snapshot(run_dir) == before
    with pytest.raises(RunError, match="not the model the run trained"):  # the Python API says the same
        train_model(str(tmp_path / "changed.spec"), None, Options(backend="torch", quiet=True, resume=str(run_dir)))
    with pytest.raises(RunError, match="not the model the run trained"):  # and a torch launch, before its workers
        check_launch(str(tmp_path / "changed.spec"), None, Options(backend="torch", resume=str(run_dir), devices=2))
    assert _snapshot(run_dir) == before


def test_the_same_model_moved_and_reformatted_resumes(finished, tmp_path):
    run_dir = _copy(finished, tmp_path)
    (tmp_path / "elsewhere").mkdir()
    moved = tmp_path / "elsewhere" / "b.spec"
    moved.write_text("\n\n" + spec_text(CHANGES["padding"][0], comment="moved, commented, padding written out"))
    result = train_model(str(moved), None, Options(backend="jax", quiet=True, resume=str(run_dir), epochs=2))
    assert [row["epoch"] for row in result.history] == [1, 2]


def _strip_fingerprints(run_dir: Path) -> None:
    """What a run made before fingerprints looks like."""
    run = json.loads((run_dir / "run.json").read_text())
    del run["models"]
    (run_dir / "run.json").write_text(json.dumps(run))
    for path in _states(run_dir):
        state = json.loads(path.read_text())
        del state["run"]["models"]
        path.write_text(json.dumps(state))


def test_a_run_made_before_fingerprints_still_resumes(finished, tmp_path):
    run_dir = _copy(finished, tmp_path)
    _strip_fingerprints(run_dir)
    result = train_model(str(finished.parent / "a.spec"), None,
                         Options(backend="jax", quiet=True, resume=str(run_dir), epochs=2))
    assert [row["epoch"] for row in result.history] == [1, 2]
    # Its new checkpoint has the fingerprint: a later resume checks it.
    state = json.loads(_states(run_dir)[-1].read_text())
    assert state["run"]["models"]["small"]["fingerprint"] == fingerprint(specc.load(finished.parent / "a.spec")["small"])


def test_a_run_made_before_fingerprints_keeps_the_older_checks(finished, tmp_path):
    """Without a fingerprint a change of shapes is still named by the
    checkpoint's shapes, and a final activation that does not fit the loss by the loss."""
    run_dir = _copy(finished, tmp_path)
    _strip_fingerprints(run_dir)
    (tmp_path / "wider.spec").write_text(spec_text(("Conv2D(4,", "Conv2D(5,")))
    with pytest.raises(UserError, match=r"conv2d_1/kernel has shape \[3, 3, 1, 4\]"):
        train_model(str(tmp_path / "wider.spec"), None, Options(backend="jax", quiet=True, resume=str(run_dir)))
    (tmp_path / "tanh.spec").write_text(spec_text(("Dense(4, activation=softmax)", "Dense(4, activation=tanh)"))
                                        .replace("cross_entropy", "mse"))
    with pytest.raises(RunError, match="ends in tanh: not the model the run trained"):
        train_model(str(tmp_path / "tanh.spec"), None, Options(backend="jax", quiet=True, resume=str(run_dir)))


def test_damaged_fingerprints_are_named(finished, tmp_path):
    run_dir = _copy(finished, tmp_path)
    state = _states(run_dir)[-1]
    data = json.loads(state.read_text())
    data["run"]["models"] = {"small": "not a record"}
    state.write_text(json.dumps(data))
    with pytest.raises(UserError, match="its models are not fingerprints") as info:
        train_model(str(finished.parent / "a.spec"), None, Options(backend="jax", quiet=True, resume=str(run_dir)))
    assert str(state) in info.value.message


# ---------------------------------------------------------------- --out DIR --resume DIR


@pytest.mark.parametrize("form", ["{run}", "./{run}/"])
def test_out_naming_the_resumed_directory_is_the_original_command_again(finished, tmp_path, monkeypatch, capsys,
                                                                         form):
    from specc.cli import main

    monkeypatch.chdir(tmp_path)
    _copy(finished, tmp_path)
    shutil.copy(finished.parent / "a.spec", tmp_path / "a.spec")
    out = form.format(run="run")
    status = main(["train", "a.spec", "--backend", "torch", "--quiet", "--out", out, "--epochs", "2",
                   "--resume", "run"])
    captured = capsys.readouterr()
    assert status == 0, captured.err
    assert json.loads(captured.out)["epochs"] == 2
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in rows] == [1, 2]


def test_out_naming_another_directory_with_resume_is_still_refused(finished, tmp_path, monkeypatch, capsys):
    from specc.cli import main

    monkeypatch.chdir(tmp_path)
    _copy(finished, tmp_path)
    shutil.copy(finished.parent / "a.spec", tmp_path / "a.spec")
    (tmp_path / "other").mkdir()
    before = _snapshot(tmp_path / "run")
    for other in ("other", "new"):
        status = main(["train", "a.spec", "--backend", "torch", "--quiet", "--out", other, "--resume", "run"])
        err = capsys.readouterr().err
        assert status == 1
        assert err.splitlines() == ["specc: error: --out and --resume cannot be used together",
                                    "hint: a resumed run continues in its own directory: drop --out"]
    assert _snapshot(tmp_path / "run") == before and not (tmp_path / "new").exists()


# ---------------------------------------------------------------- recipes: every model is fingerprinted

GAN = """
model small {
    input [3]
    Dense(6, activation=tanh)
}
model critic {
    input [6]
    Dense(4, activation=relu)
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


def test_a_gan_run_fingerprints_both_models(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    np.savez("data.npz", x_train=rng.random((16, 6), np.float32), y_train=np.zeros(16, int),
             x_test=rng.random((8, 6), np.float32), y_test=np.zeros(8, int))
    Path("gan.spec").write_text(GAN)
    train_model("gan.spec", None, Options(backend="torch", quiet=True, out="run"))
    kept = json.loads(Path("run/run.json").read_text())["models"]
    assert set(kept) == {"small", "critic"}
    Path("changed.spec").write_text(GAN.replace("Dense(4, activation=relu)", "Dense(4, activation=elu)"))
    before = _snapshot(tmp_path / "run")
    with pytest.raises(RunError, match="model critic in changed.spec is not the model the run trained: "
                                       "dense_1: activation relu -> elu"):
        train_model("changed.spec", None, Options(backend="jax", quiet=True, resume="run", epochs=2))
    assert _snapshot(tmp_path / "run") == before
    resumed = train_model("gan.spec", None, Options(backend="jax", quiet=True, resume="run", epochs=2))
    assert resumed.result["epochs"] == 2


def test_the_original_flags_again_with_resume_are_accepted(finished, tmp_path, monkeypatch, capsys):
    """The original command plus --resume: --batch, --lr, --seed and --limit
    that equal the run's are accepted; another value is refused as before."""
    from specc.cli import main

    monkeypatch.chdir(tmp_path)
    _copy(finished, tmp_path)
    shutil.copy(finished.parent / "a.spec", tmp_path / "a.spec")
    before = _snapshot(tmp_path / "run")
    for flag, value in (("--seed", "2"), ("--batch", "16"), ("--lr", "0.01"), ("--limit", "64")):
        status = main(["train", "a.spec", "--backend", "torch", "--quiet", "--out", "run", flag, value,
                       "--resume", "run"])
        err = capsys.readouterr().err
        assert status == 1
        assert err.startswith(f"specc: error: {flag} cannot change a resumed run: it goes on with the values it "
                              "was started with\nhint: "), err
    assert _snapshot(tmp_path / "run") == before
    status = main(["train", "a.spec", "--backend", "torch", "--quiet", "--out", "run", "--seed", "1", "--batch", "32",
                   "--lr", "3e-3", "--epochs", "2", "--resume", "run"])
    captured = capsys.readouterr()
    assert status == 0, captured.err
    assert json.loads(captured.out)["epochs"] == 2
