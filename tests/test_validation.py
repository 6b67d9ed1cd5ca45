"""Never a traceback: bad run-time inputs (data, flags, run directories,
weight files, plot inputs) through the CLI end in exit 1 or 2 and one
`specc: error:` line (plus an optional hint) naming what is wrong; a run that
never started leaves no directory, and a refused command never touches an
existing run. Plus a property test over npz contents."""

from __future__ import annotations

import hashlib
import os
import struct
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from specc import cli
from specc.data import load_dataset
from specc.errors import UserError
from specc.ir import Call
from specc.recipes.supervised import prepare_targets
from specc.validate import validate_dataset
from specc.weights import init_weights, save_weights

BACKENDS = ("jax", "torch")

SPEC = """
model small {{
    input [6]
    Dense({units}, activation={activation})
}}
train small {{
    data      = npz("data.npz")
    loss      = {loss}
    optimizer = sgd(lr=0.1)
    batch     = 8
    epochs    = 1
}}
"""
CLASSIFIER = dict(units=8, activation="softmax", loss="cross_entropy")
BINARY = dict(units=1, activation="sigmoid", loss="binary_cross_entropy")
REGRESSOR = dict(units=8, activation="linear", loss="mse")


def good_arrays(classes: int = 8) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return dict(x_train=rng.random((24, 6), np.float32), y_train=np.arange(24) % classes,
                x_test=rng.random((8, 6), np.float32), y_test=np.arange(8) % classes)


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # npz("data.npz") and the default runs/ are relative to it
    return tmp_path


def write_case(workdir: Path, model: dict, **changes) -> str:
    """small.spec and data.npz: good arrays with `changes` (None drops an array)."""
    (workdir / "small.spec").write_text(SPEC.format(**model))
    arrays = {**good_arrays(2 if model is BINARY else 8), **changes}
    np.savez(workdir / "data.npz", **{k: v for k, v in arrays.items() if v is not None})
    return "small.spec"


def run_cli(capsys, *args: str) -> tuple[int, str]:
    status = cli.main(list(args))
    return status, capsys.readouterr().err


def assert_clean_error(status: int, err: str, *names: str, code: int = cli.EXIT_DIAGNOSTICS) -> str:
    """One `specc: error:` line naming `names` (and an optional hint), and exit
    status `code`: 1 for a mistake in the user's files or values, 2 for a
    command line argparse refuses."""
    lines = err.rstrip("\n").splitlines()
    assert status == code, (status, err)
    assert "Traceback" not in err
    assert lines and lines[0].startswith("specc: error: "), err
    assert len(lines) == 1 or (len(lines) == 2 and lines[1].startswith("hint: ")), err
    for name in names:
        assert name in lines[0], (name, lines[0])
    return lines[0]


def assert_nothing_made(workdir: Path) -> None:
    assert not (workdir / "run").exists() and not (workdir / "runs").exists()


# ---------------------------------------------------------------- data that does not fit the model

OBJECTS = np.array([1, "a", None, 2, 3, 4, 5, 6], dtype=object)
NAN_X = good_arrays()["x_train"].copy()
NAN_X[5, 2] = np.nan

DATA_CASES = {
    "label id == classes": (CLASSIFIER, dict(y_train=np.r_[np.zeros(17, int), 8, np.zeros(6, int)]),
                            ["data.npz", "y_train[17] is 8", "has 8 outputs", "the labels do not fit the model"]),
    "negative label id": (CLASSIFIER, dict(y_test=np.array([0, 1, -1, 2, 3, 4, 5, 6])),
                          ["data.npz", "y_test[2] is -1", "the labels do not fit the model"]),
    "float labels for cross_entropy": (CLASSIFIER, dict(y_train=np.full(24, 0.5)),
                                       ["data.npz", "y_train[0] is 0.5", "integer class ids",
                                        "the labels do not fit the model"]),
    # [N, 1], a column of ids, is taken as Keras takes it (tests/test_reliability_labels.py); other shapes are not
    "labels of shape [N, 2]": (CLASSIFIER, dict(y_train=np.zeros((24, 2), int)),
                               ["data.npz", "y_train has shape [24, 2]", "shape [N] (or [N, 1])",
                                "the labels do not fit the model"]),
    "labels of shape [N, 1, 1]": (CLASSIFIER, dict(y_test=np.zeros((8, 1, 1), int)),
                                  ["data.npz", "y_test has shape [8, 1, 1]", "the labels do not fit the model"]),
    "one-hot labels for cross_entropy": (CLASSIFIER, dict(y_train=np.eye(8, dtype=np.float32)[np.arange(24) % 8]),
                                         ["data.npz", "y_train has shape [24, 8]", "the labels do not fit the model"]),
    "bce target of 2": (BINARY, dict(y_train=np.r_[np.zeros(3, int), 2, np.zeros(20, int)]),
                        ["data.npz", "y_train[3] is 2", "[0, 1]", "the labels do not fit the model"]),
    "mse class id out of the one-hot": (REGRESSOR, dict(y_test=np.array([0, 1, 2, 3, 4, 5, 6, 9])),
                                        ["data.npz", "y_test[7] is 9", "the labels do not fit the model"]),
    "mse float targets of the wrong shape": (REGRESSOR, dict(y_train=np.zeros(24)),
                                             ["data.npz", "y_train has shape [24]", "[N, 8]"]),
    "NaN in x_train": (CLASSIFIER, dict(x_train=NAN_X), ["data.npz", "x_train[5, 2] is nan", "finite"]),
    "inf in y_test (bce)": (BINARY, dict(y_test=np.r_[np.zeros(7), np.inf]), ["data.npz", "y_test[7] is inf", "the labels do not fit the model"]),
    "wrong x shape": (CLASSIFIER, dict(x_test=np.zeros((8, 5))), ["data.npz", "x_test", "[8, 5]"]),
    "mismatched lengths": (CLASSIFIER, dict(y_train=np.zeros(23, int)), ["data.npz", "y_train", "23", "24"]),
    "missing y_test": (CLASSIFIER, dict(y_test=None), ["data.npz", "y_test"]),
    "object array": (CLASSIFIER, dict(y_test=OBJECTS), ["data.npz", "y_test", "object"]),
    "string labels": (CLASSIFIER, dict(y_train=np.array(["a"] * 24)), ["data.npz", "y_train",
                                                                       "the labels do not fit the model"]),
    "complex inputs": (CLASSIFIER, dict(x_train=np.ones((24, 6), complex)), ["data.npz", "x_train", "complex"]),
    "label beyond int32": (CLASSIFIER, dict(y_train=np.r_[np.zeros(23, np.int64), 2**32 + 1]),
                           ["data.npz", "y_train[23]", "int32", "the labels do not fit the model"]),
    "fewer labels than samples": (CLASSIFIER, dict(y_test=np.zeros(7, int)),
                                  ["data.npz", "'y_test' has 7 entries", "the labels do not fit the model"]),
    "a single label": (CLASSIFIER, dict(y_train=np.int64(3)),
                       ["data.npz", "'y_train' is a single value", "the labels do not fit the model"]),
    "empty training set": (CLASSIFIER, dict(x_train=np.zeros((0, 6)), y_train=np.zeros(0, int)),
                           ["data.npz", "x_train", "no samples"]),
}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", DATA_CASES)
def test_bad_data_is_one_clean_error_and_no_run_directory(case, backend, workdir, capsys):
    model, changes, names = DATA_CASES[case]
    spec = write_case(workdir, model, **changes)
    status, err = run_cli(capsys, "train", spec, "--backend", backend, "--quiet", "--out", "run")
    assert_clean_error(status, err, *names)
    assert_nothing_made(workdir)


@pytest.mark.parametrize("backend", BACKENDS)
def test_whole_number_float_labels_are_class_ids(backend, workdir, capsys):
    """Class ids stored as floats (0.0, 1.0, ...: what pandas or a CSV gives)
    train as Keras's sparse cross-entropy takes them: exactly as the same ids
    stored as integers."""
    import json

    results = {}
    for dtype in (np.int64, np.float32):
        arrays = good_arrays()
        spec = write_case(workdir, CLASSIFIER, y_train=arrays["y_train"].astype(dtype),
                          y_test=arrays["y_test"].astype(dtype))
        out = f"run-{np.dtype(dtype).name}"
        status, err = run_cli(capsys, "train", spec, "--backend", backend, "--quiet", "--out", out)
        assert status == 0, err
        results[dtype] = json.loads((workdir / out / "result.json").read_text())
    assert results[np.float32]["test_loss"] == results[np.int64]["test_loss"]
    assert results[np.float32]["test_accuracy"] == results[np.int64]["test_accuracy"]


@pytest.mark.parametrize("content, says", [
    (b"x_train,y_train\n1,2\n", "not a .npz file"),
    (b"", "not a .npz file"),
    (b"\x93NUMPY\x01\x00", "single .npy array"),
])
def test_a_file_that_is_not_npz(content, says, workdir, capsys):
    spec = write_case(workdir, CLASSIFIER)
    (workdir / "data.npz").write_bytes(content)
    status, err = run_cli(capsys, "train", spec, "--quiet", "--out", "run")
    assert_clean_error(status, err, "data.npz", says)
    assert_nothing_made(workdir)


@pytest.mark.parametrize("keep", [0.3, 0.6, 0.95])
def test_a_truncated_npz(keep, workdir, capsys):
    spec = write_case(workdir, CLASSIFIER)
    raw = (workdir / "data.npz").read_bytes()
    (workdir / "data.npz").write_bytes(raw[:int(len(raw) * keep)])
    status, err = run_cli(capsys, "train", spec, "--quiet", "--out", "run")
    assert_clean_error(status, err, "data.npz")
    assert_nothing_made(workdir)


def _npz_with_raw_member(path: Path, key: str, member: bytes) -> None:
    """data.npz with `key`'s .npy replaced by raw bytes (numpy would refuse to write them)."""
    import io
    import zipfile

    with zipfile.ZipFile(path, "w") as z:
        for name, array in good_arrays().items():
            buf = io.BytesIO()
            np.save(buf, array)
            z.writestr(f"{name}.npy", member if name == key else buf.getvalue())


def _npy(header: str, version: bytes = b"\x02\x00") -> bytes:
    size = len(header).to_bytes(4 if version == b"\x02\x00" else 2, "little")
    return b"\x93NUMPY" + version + size + header.encode() + b"\0" * 24


@pytest.mark.parametrize("member, says", [
    # over numpy's header limit: numpy's message names allow_pickle, but nothing here is a Python object
    (_npy("{'descr': '<f4', 'fortran_order': False, 'shape': (24, 6), " + " " * 20000 + "}\n"),
     "'x_train' is damaged (Header info length"),
    (_npy("{'descr': 'xyz', 'fortran_order': False, 'shape': (24, 6), }\n", b"\x01\x00"),
     "'x_train' is damaged (descr is not a valid dtype descriptor"),
])
def test_a_damaged_npy_member_is_named_as_it_is(member, says, workdir, capsys):
    spec = write_case(workdir, CLASSIFIER)
    _npz_with_raw_member(workdir / "data.npz", "x_train", member)
    status, err = run_cli(capsys, "train", spec, "--quiet", "--out", "run")
    line = assert_clean_error(status, err, "data.npz", says)
    assert "Python objects" not in line
    assert_nothing_made(workdir)


def test_a_fifo_named_as_the_npz_is_not_read(workdir, capsys):
    spec = write_case(workdir, CLASSIFIER)
    (workdir / "data.npz").unlink()
    os.mkfifo(workdir / "data.npz")  # reading it would block forever
    status, err = run_cli(capsys, "train", spec, "--quiet", "--out", "run")
    assert_clean_error(status, err, "data.npz", "not a regular file")
    assert_nothing_made(workdir)


def test_a_directory_named_as_the_npz(workdir, capsys):
    spec = write_case(workdir, CLASSIFIER)
    (workdir / "data.npz").unlink()
    (workdir / "data.npz").mkdir()
    status, err = run_cli(capsys, "train", spec, "--quiet", "--out", "run")
    assert_clean_error(status, err, "data.npz", "directory")


def test_synthetic_classes_beyond_the_model_name_the_data_set(workdir, capsys):
    (workdir / "s.spec").write_text(SPEC.format(**CLASSIFIER).replace('npz("data.npz")', "synthetic(samples=40, classes=10)"))
    status, err = run_cli(capsys, "train", "s.spec", "--backend", "torch", "--quiet", "--out", "run")
    line = assert_clean_error(status, err, "synthetic: y_", "has 8 outputs", "the labels do not fit the model")
    assert "is 8" in line or "is 9" in line
    assert_nothing_made(workdir)


def test_token_ids_beyond_the_embedding(workdir, capsys):
    (workdir / "e.spec").write_text("""
model tokens {
    input [5] int
    Embedding(4, 3)
    Flatten()
    Dense(2, activation=softmax)
}
train tokens { data = synthetic(samples=40, classes=2, vocab=9); loss = cross_entropy }
""")
    status, err = run_cli(capsys, "train", "e.spec", "--backend", "torch", "--quiet", "--out", "run")
    assert_clean_error(status, err, "synthetic: x_train[", "[0, 4)")
    assert_nothing_made(workdir)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("model, changes", [
    (CLASSIFIER, {}),
    (BINARY, dict(y_train=np.linspace(0, 1, 24))),  # probabilities are targets too (Keras)
    (REGRESSOR, dict(y_train=np.zeros((24, 8), np.float32), y_test=np.zeros((8, 8), np.float32))),
])
def test_data_that_fits_still_trains(model, changes, backend, workdir, capsys):
    spec = write_case(workdir, model, **changes)
    status, err = run_cli(capsys, "train", spec, "--backend", backend, "--quiet", "--out", "run")
    assert status == 0, err
    assert (workdir / "run" / "result.json").is_file()


# ---------------------------------------------------------------- command-line values

# (flags, what the error says, exit status): values argparse cannot convert or
# choose are usage errors (2); values of the right type that are out of range
# are refused by the runner like other bad inputs (1).
FLAG_CASES = [
    (["--seed", "-1"], "--seed must be a non-negative integer, got -1", 1),
    (["--lr", "-1"], "--lr must be positive, got -1", 1),
    (["--lr", "0"], "--lr must be positive, got 0", 1),
    (["--lr", "nan"], "--lr must be a finite number, got nan", 1),
    (["--lr", "inf"], "--lr must be a finite number, got inf", 1),
    (["--batch", "0"], "--batch must be a positive integer, got 0", 1),
    (["--epochs", "0"], "--epochs must be a positive integer, got 0", 1),
    (["--limit", "0"], "--limit must be a positive integer, got 0", 1),
    (["--limit", "-5"], "--limit must be a positive integer, got -5", 1),
    (["--seed", str(2**64)], "--seed must be at most 2**63 - 1", 1),
    (["--seed", "1.5"], "--seed", 2),
    (["--epochs", "many"], "--epochs", 2),
    (["--lr", "fast"], "--lr", 2),
    (["--backend", "tf"], "--backend", 2),
    (["--device", "tpu"], "--device", 2),
    (["--data-dir", "nowhere"], "--data-dir nowhere: no such directory", 1),
    (["--resume", "nowhere"], "--resume nowhere: no such directory", 1),
    (["--resume", ""], "--resume needs a directory, got ''", 1),  # not a new run in runs/
    (["--out", ""], "--out needs a directory, got ''", 1),
    (["--data-dir", ""], "--data-dir needs a directory, got ''", 1),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("flags, says, code", FLAG_CASES, ids=[" ".join(f) for f, _, _ in FLAG_CASES])
def test_bad_flags(flags, says, code, backend, workdir, capsys):
    spec = write_case(workdir, CLASSIFIER)
    status, err = run_cli(capsys, "train", spec, "--backend", backend, "--quiet", "--out", "run", *flags)
    assert_clean_error(status, err, says, code=code)
    assert_nothing_made(workdir)


def test_out_that_is_a_file(workdir, capsys):
    spec = write_case(workdir, CLASSIFIER)
    (workdir / "taken").write_text("mine")
    status, err = run_cli(capsys, "train", spec, "--quiet", "--out", "taken")
    assert_clean_error(status, err, "--out taken", "file")
    assert (workdir / "taken").read_text() == "mine"
    status, err = run_cli(capsys, "train", spec, "--quiet", "--out", "taken/run")
    assert_clean_error(status, err, "taken", "not a directory")


def snapshot(directory: Path) -> dict[str, str]:
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(directory.rglob("*"))}


@pytest.mark.parametrize("backend", BACKENDS)
def test_out_holding_a_run_is_refused_and_left_whole(backend, workdir, capsys):
    spec = write_case(workdir, CLASSIFIER)
    run = workdir / "old"
    (run / "checkpoint-0001").mkdir(parents=True)
    (run / "run.json").write_text('{"model": "small"}')
    (run / "metrics.jsonl").write_text('{"epoch": 1, "loss": 0.5}\n')
    save_weights(run / "checkpoint-0001" / "weights.safetensors", {"a": np.ones(3)})
    before = snapshot(run)
    status, err = run_cli(capsys, "train", spec, "--backend", backend, "--quiet", "--out", "old")
    assert_clean_error(status, err, "--out old", "already holds a run")
    assert "--resume old" in err
    assert snapshot(run) == before


def test_an_empty_out_directory_is_fine(workdir, capsys):
    spec = write_case(workdir, CLASSIFIER)
    (workdir / "empty").mkdir()
    assert cli.main(["train", spec, "--backend", "torch", "--quiet", "--out", "empty"]) == 0
    assert (workdir / "empty" / "weights.safetensors").is_file()


def test_resume_of_a_file_or_together_with_out(workdir, capsys):
    spec = write_case(workdir, CLASSIFIER)
    (workdir / "f").write_text("")
    status, err = run_cli(capsys, "train", spec, "--quiet", "--resume", "f")
    assert_clean_error(status, err, "--resume f", "not a run directory")
    (workdir / "d").mkdir()
    status, err = run_cli(capsys, "train", spec, "--quiet", "--resume", "d", "--out", "run")
    assert_clean_error(status, err, "--out and --resume")
    for flag in ("--lr", "--batch", "--seed", "--limit"):  # the runner keeps the run's own: never ignore silently
        status, err = run_cli(capsys, "train", spec, "--quiet", "--resume", "d", flag, "2")
        assert_clean_error(status, err, f"{flag} cannot change a resumed run")
    assert_nothing_made(workdir)


# ---------------------------------------------------------------- weight files for eval


@pytest.fixture
def eval_case(workdir):
    spec = write_case(workdir, CLASSIFIER)
    import specc

    model = specc.load(spec)["small"]
    save_weights(workdir / "good.safetensors", init_weights(model, 0))
    return spec, model


def other_weights(model) -> dict[str, np.ndarray]:
    weights = init_weights(model, 0)
    weights["dense_1/kernel"] = np.zeros((6, 3), np.float32)  # mis-shaped
    del weights["dense_1/bias"]  # missing
    weights["dense_9/bias"] = np.zeros(2, np.float32)  # unexpected
    return weights


WEIGHT_CASES = {
    "text": (lambda good, model: b"these are not weights\n", ["w.safetensors", "not a safetensors file"]),
    "empty": (lambda good, model: b"", ["w.safetensors", "not a safetensors file"]),
    "truncated": (lambda good, model: good[:-7], ["w.safetensors", "safetensors"]),
    "header of 10**15 bytes": (lambda good, model: struct.pack("<Q", 10**15) + good[8:],
                               ["w.safetensors", "1,000,000,000,000,000"]),
    "malformed header": (lambda good, model: struct.pack("<Q", 12) + b"{not json!!}", ["w.safetensors"]),
}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", WEIGHT_CASES)
def test_damaged_weight_files(case, backend, eval_case, workdir, capsys):
    spec, model = eval_case
    make, names = WEIGHT_CASES[case]
    (workdir / "w.safetensors").write_bytes(make((workdir / "good.safetensors").read_bytes(), model))
    status, err = run_cli(capsys, "eval", spec, "--weights", "w.safetensors", "--backend", backend)
    assert_clean_error(status, err, *names)


@pytest.mark.parametrize("backend", BACKENDS)
def test_weights_of_another_model_name_the_first_bad_keys(backend, eval_case, workdir, capsys):
    spec, model = eval_case
    save_weights(workdir / "w.safetensors", other_weights(model))
    status, err = run_cli(capsys, "eval", spec, "--weights", "w.safetensors", "--backend", backend)
    assert_clean_error(status, err, "w.safetensors", "do not fit model 'small'", "missing dense_1/bias [8]",
                       "unexpected dense_9/bias", "dense_1/kernel has shape [6, 3], expected [6, 8]")


@pytest.mark.parametrize("weights", [None, "missing.safetensors", "."])
def test_a_weights_path_that_is_no_file(weights, eval_case, capsys):
    spec, _ = eval_case
    args = ["eval", spec] + (["--weights", weights] if weights else [])
    status, err = run_cli(capsys, *args)
    # no --weights at all is a usage error (argparse: a required argument); a path that is no file, a bad input
    assert_clean_error(status, err, weights or "--weights", code=2 if weights is None else 1)


def test_integer_or_nan_weights_are_refused(eval_case, workdir, capsys):
    spec, model = eval_case
    weights = init_weights(model, 0)
    save_weights(workdir / "i.safetensors", {**weights, "dense_1/bias": np.zeros(8, np.int32)})
    status, err = run_cli(capsys, "eval", spec, "--weights", "i.safetensors")
    assert_clean_error(status, err, "i.safetensors", "dense_1/bias", "int32")
    save_weights(workdir / "n.safetensors", {**weights, "dense_1/bias": np.full(8, np.nan, np.float32)})
    status, err = run_cli(capsys, "eval", spec, "--weights", "n.safetensors")
    assert_clean_error(status, err, "n.safetensors", "dense_1/bias", "NaN")


def test_bfloat16_weights_are_floats_and_float64_beyond_float32_is_refused(eval_case, workdir, capsys):
    ml_dtypes = pytest.importorskip("ml_dtypes")
    from safetensors.numpy import save_file

    spec, model = eval_case
    weights = init_weights(model, 0)
    save_file({**weights, "dense_1/kernel": weights["dense_1/kernel"].astype(ml_dtypes.bfloat16)},
              str(workdir / "b.safetensors"))
    status, err = run_cli(capsys, "eval", spec, "--weights", "b.safetensors")
    assert status == 0 and err == "", err
    save_file({**weights, "dense_1/bias": np.full(8, 1e300)}, str(workdir / "d.safetensors"))
    status, err = run_cli(capsys, "eval", spec, "--weights", "d.safetensors")
    assert_clean_error(status, err, "d.safetensors", "dense_1/bias", "infinite")


def test_eval_checks_the_data_too(eval_case, workdir, capsys):
    spec, _ = eval_case
    write_case(workdir, CLASSIFIER, y_test=np.full(8, 11))
    status, err = run_cli(capsys, "eval", spec, "--weights", "good.safetensors", "--backend", "torch")
    assert_clean_error(status, err, "y_test[0] is 11", "the labels do not fit the model")


# ---------------------------------------------------------------- plot, spec paths, internal errors


def test_plot_of_damaged_or_missing_runs(workdir, capsys):
    status, err = run_cli(capsys, "plot", "nowhere")
    assert_clean_error(status, err, "nowhere")
    (workdir / "r").mkdir()
    (workdir / "r" / "metrics.jsonl").write_text('{"epoch": 1, "loss": 0.5}\n{"epoch": 2, "lo')
    status, err = run_cli(capsys, "plot", "r")
    assert_clean_error(status, err, "metrics.jsonl", "line 2")
    assert not (workdir / "curves.png").exists()


@pytest.mark.parametrize("command", ["train", "eval", "check", "summary"])
def test_a_missing_spec_file(command, workdir, capsys):
    extra = ["--weights", "w.safetensors"] if command == "eval" else []
    status, err = run_cli(capsys, command, "missing.spec", *extra)
    assert status == 1 and "missing.spec" in err and "Traceback" not in err


def test_runner_commands_are_always_registered():
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert {"train", "eval", "plot"} <= set(sub.choices)


def test_an_internal_error_asks_for_a_bug_report(monkeypatch, capsys):
    import specc.commands

    def broken(args):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(specc.commands, "cmd_eval", broken)  # the parser is built per call of main
    monkeypatch.delenv("SPECC_DEBUG", raising=False)
    status, err = run_cli(capsys, "eval", "x.spec", "--weights", "w")
    assert status == cli.EXIT_INTERNAL
    assert err.startswith("specc: internal error: ZeroDivisionError: division by zero\nhint: this is a bug")
    assert "Traceback" not in err
    monkeypatch.setenv("SPECC_DEBUG", "1")
    status, err = run_cli(capsys, "eval", "x.spec", "--weights", "w")
    assert status == cli.EXIT_INTERNAL and "Traceback" in err


# ---------------------------------------------------------------- property: success or the one error kind

def inputs(n: int):
    good = hnp.arrays(np.float32, (n, 6), elements=st.floats(-5, 5, width=32))
    return st.one_of(good, good, good,
                     hnp.arrays(st.sampled_from([np.float16, np.float64, np.int16, np.uint64, np.bool_, np.complex64]),
                                st.sampled_from([(n, 6), (n, 5), (n, 6, 1), (n,)])))


def labels(n: int):
    return st.one_of(
        hnp.arrays(st.sampled_from([np.int8, np.int64, np.uint8]), n, elements=st.integers(0, 7)),  # class ids
        hnp.arrays(st.sampled_from([np.int64, np.bool_]), n, elements=st.integers(0, 1)),  # binary
        hnp.arrays(np.float32, st.sampled_from([(n,), (n, 1), (n, 8)]), elements=st.floats(0, 1, width=32)),
        hnp.arrays(np.float64, n, elements=st.floats(-1, 2) | st.sampled_from([np.nan, np.inf])),
        hnp.arrays(st.sampled_from([np.int8, np.int64, np.uint64, np.bool_, np.float16, np.float64]), n),
        hnp.arrays(np.int32, (n, 2), elements=st.integers(-1, 9)),
        st.just(np.array(["a"] * n)),
    )


@st.composite
def npz_contents(draw) -> dict[str, np.ndarray]:
    """Mostly well-formed splits (so acceptance is exercised too), with wrong
    lengths, dtypes, shapes, values and missing or extra arrays mixed in."""
    arrays = {}
    for split, most in (("train", 12), ("test", 6), ("val", 6)):
        n = draw(st.integers(1, most))
        arrays[f"x_{split}"] = draw(inputs(draw(st.sampled_from([n, n, n, 0, n + 1]))))
        arrays[f"y_{split}"] = draw(labels(draw(st.sampled_from([n, n, n, 0, n + 1]))))
    drop = draw(st.sampled_from([{"x_val", "y_val"}] * 3 + [set()]) | st.sets(st.sampled_from(sorted(arrays))))
    extra = draw(st.sampled_from([{}, {}, {"extra": np.zeros(3)}, {"extra": OBJECTS}]))
    return {**{k: v for k, v in arrays.items() if k not in drop}, **extra}


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(arrays=npz_contents(), split=st.sampled_from([0.0, 0.25]), loss=st.sampled_from(["cross_entropy", "mse",
                                                                                "binary_cross_entropy"]))
def test_any_npz_loads_and_fits_or_is_one_user_error(arrays, split, loss):
    import specc

    units = 1 if loss == "binary_cross_entropy" else 8
    program = specc.loads(SPEC.format(units=units, activation="linear", loss=loss))
    model, train = program["small"], program.trains["small"]
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "d.npz")
        np.savez(path, **arrays)
        try:
            dataset = load_dataset(Call("npz", {"path": path, "validation_split": split}), [6])
            validate_dataset(dataset, model, train)
        except UserError as err:
            assert "\n" not in err.message and err.message
            event("refused")
            return
    event("accepted")
    # Accepted: the data really fits (what the backends would otherwise meet silently).
    for x, y in ((dataset.x_train, dataset.y_train), (dataset.x_test, dataset.y_test)):
        assert len(x) == len(y) > 0 and x.shape[1:] == (6,) and np.isfinite(x).all()
        if loss == "cross_entropy":  # integer ids, or whole-number floats the backends get as those ids
            ids = prepare_targets(model, train, y)
            assert ids.dtype.kind == "i" and ids.ndim == 1 and 0 <= ids.min() and ids.max() < 8
            assert np.array_equal(ids, y.reshape(len(y)))  # a column of ids [N, 1] too
        if loss == "binary_cross_entropy":
            assert np.isfinite(y).all() and 0 <= y.min() and y.max() <= 1
        if loss == "mse":
            assert (y.ndim == 1 and 0 <= y.min() and y.max() < 8) if y.dtype.kind == "i" else y.shape[1:] == (8,)
