"""Class ids as a column: labels of shape [N, 1] for `cross_entropy` (as a
CSV gives them, integers or whole-number floats) are taken as Keras's sparse
cross-entropy takes them, flattened to [N], on npz data through `specc
train` and `specc eval` on both backends; each backend gets [N] int32 ids and
trains exactly as it does on [N] labels. Other shapes are still refused."""

from __future__ import annotations

import json

import numpy as np
import pytest

import specc
from specc import cli
from specc.data import load_dataset
from specc.ir import Call
from specc.recipes.supervised import prepare_targets
from specc.validate import validate_dataset

pytest.importorskip("jax")
pytest.importorskip("torch")

BACKENDS = ("jax", "torch")

SPEC = """
model small {
    input [6]
    Dense(8, activation=relu)
    Dense(4, activation=softmax)
}
train small {
    data      = npz("data.npz", validation_split=0.25)
    loss      = cross_entropy
    optimizer = sgd(lr=0.1, momentum=0.9)
    batch     = 8
    epochs    = 2
    metrics   = [accuracy]
    seed      = 3
}
"""

# A sequence model: one class id per time step, [N, T] or a column per step [N, T, 1].
SEQUENCE = """
model tagger {
    input [5, 3]
    GRU(6, return_sequences=true)
    Dense(4, activation=softmax)
}
train tagger {
    data      = npz("data.npz")
    loss      = cross_entropy
    batch     = 8
    epochs    = 1
}
"""


def arrays(label_shape=lambda y: y, dtype=np.int64, x_shape=(6,), seed=0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    ids = {split: rng.integers(0, 4, size=(n, *x_shape[:-1])) for split, n in (("train", 32), ("test", 16))}
    return {"x_train": rng.random((32, *x_shape), np.float32), "y_train": label_shape(ids["train"]).astype(dtype),
            "x_test": rng.random((16, *x_shape), np.float32), "y_test": label_shape(ids["test"]).astype(dtype)}


def column(y: np.ndarray) -> np.ndarray:
    return y[..., None]


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def train(workdir, capsys, spec: str, data: dict, backend: str, out: str) -> dict:
    (workdir / "s.spec").write_text(spec)
    np.savez(workdir / "data.npz", **data)
    status = cli.main(["train", "s.spec", "--backend", backend, "--quiet", "--out", out])
    captured = capsys.readouterr()
    assert status == 0, captured.err
    assert "Traceback" not in captured.err
    return json.loads(captured.out)


def weights(run_dir) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(str(run_dir / "weights.safetensors"))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [np.int64, np.float64], ids=["int ids", "whole-number floats"])
def test_a_column_of_class_ids_trains_as_the_ids_do(workdir, capsys, backend, dtype):
    flat = train(workdir, capsys, SPEC, arrays(dtype=np.int64), backend, "flat")
    col = train(workdir, capsys, SPEC, arrays(column, dtype=dtype), backend, "column")
    assert col["test_loss"] == flat["test_loss"] and col["test_accuracy"] == flat["test_accuracy"]
    a, b = weights(workdir / "flat"), weights(workdir / "column")
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    # specc eval reads the column the same way
    status = cli.main(["eval", "s.spec", "--weights", "column/weights.safetensors", "--backend", backend])
    out = capsys.readouterr()
    assert status == 0, out.err
    assert f"{col['test_loss']:.4f}"[:5] in out.out


@pytest.mark.parametrize("backend", BACKENDS)
def test_each_backend_gets_flat_int32_ids(workdir, monkeypatch, backend):
    """What the backend's trainer is handed for every split: [N] int32 ids."""
    from specc import backend as registry
    from specc.runner import Options, train_model

    np.savez(workdir / "data.npz", **arrays(column, dtype=np.float32))
    (workdir / "s.spec").write_text(SPEC.replace("epochs    = 2", "epochs    = 1"))
    seen = []
    real = registry.get(backend).trainer

    def spying_trainer(*args, **kwargs):
        trainer = real(*args, **kwargs)
        put = trainer.put

        def spy(x, y):
            seen.append(None if y is None else (y.shape, y.dtype))
            return put(x, y)

        trainer.put = spy
        return trainer

    monkeypatch.setattr(registry.get(backend), "trainer", spying_trainer)
    train_model("s.spec", None, Options(backend=backend, quiet=True, out="run"))
    assert seen == [((24,), np.dtype(np.int32)), ((8,), np.dtype(np.int32)), ((16,), np.dtype(np.int32))]


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_column_of_ids_per_time_step(workdir, capsys, backend):
    steps = train(workdir, capsys, SEQUENCE, arrays(x_shape=(5, 3)), backend, "steps")
    col = train(workdir, capsys, SEQUENCE, arrays(column, x_shape=(5, 3)), backend, "column")
    assert col["test_loss"] == steps["test_loss"]


def test_prepare_targets_flattens_only_a_trailing_column():
    program = specc.loads(SPEC.replace('npz("data.npz", validation_split=0.25)', "synthetic()"))
    model, spec_train = program["small"], program.trains["small"]
    ids = np.array([0, 3, 1, 2])
    for y in (ids, ids[:, None], ids[:, None].astype(np.float32)):
        got = prepare_targets(model, spec_train, y)
        assert got.shape == (4,) and got.dtype.kind == "i" and np.array_equal(got, ids)


@pytest.mark.parametrize("shape,names", [
    ((32, 2), ["y_train has shape [24, 2]", "shape [N] (or [N, 1])"]),
    ((32, 1, 1), ["y_train has shape [24, 1, 1]"]),
    ((32, 4), ["y_train has shape [24, 4]", "shape [N] (or [N, 1])"]),
])
def test_other_label_shapes_are_still_refused(workdir, capsys, shape, names):
    data = arrays()
    data["y_train"] = np.zeros(shape, np.int64)
    (workdir / "s.spec").write_text(SPEC)
    np.savez(workdir / "data.npz", **data)
    for backend in BACKENDS:
        status = cli.main(["train", "s.spec", "--backend", backend, "--quiet", "--out", "run"])
        err = capsys.readouterr().err
        assert status == 1, err
        lines = err.strip().splitlines()
        assert lines[0].startswith("specc: error: data.npz: ") and "the labels do not fit the model" in lines[0]
        assert len(lines) == 1 or (len(lines) == 2 and lines[1].startswith("hint: "))
        for name in names:
            assert name in lines[0], lines[0]
        assert not (workdir / "run").exists()
    if shape == (32, 4):  # one-hot rows: the hint says how to make ids
        assert "y.argmax(-1)" in err


def test_a_column_of_ids_out_of_range_is_named_at_its_row(workdir):
    data = arrays(column)
    data["y_test"][5, 0] = 4
    np.savez(workdir / "data.npz", **data)
    program = specc.loads(SPEC)
    dataset = load_dataset(Call("npz", {"path": "data.npz"}), [6])
    assert dataset.num_classes == 5  # a column of int ids counts classes as ids do
    from specc.errors import UserError

    with pytest.raises(UserError, match=r"y_test\[5, 0\] is 4, but model 'small' has 4 outputs"):
        validate_dataset(dataset, program["small"], program.trains["small"])
