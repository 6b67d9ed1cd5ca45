"""Golden outputs of the front-end stages, the IR round trip, report invariants,
import hygiene and big specs (their timings live in benchmarks/frontend_speed.py).

    tests/golden/summary/<stem>.txt   exact stdout of `specc summary <spec>`
    tests/golden/ir/<stem>.json       exact stdout of `specc ir <spec>`

for every spec in specs/, tests/specs/ and tests/specs/graphs/ (run from the
repository root, so paths appear as given). Regenerate with
`pytest --update-golden` and review the diff.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import specc
from specc import cli
from specc.ir import Model, Program, Train

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
SPECS = (sorted((REPO / "specs").glob("*.spec")) + sorted((TESTS / "specs").glob("*.spec"))
         + sorted((TESTS / "specs" / "graphs").glob("*.spec")))
SPEC_IDS = [p.stem for p in SPECS]
FRAMEWORKS = ("jax", "jaxlib", "flax", "optax", "torch", "tensorflow", "keras")


def rel(path: Path) -> str:
    return path.relative_to(REPO).as_posix()


@pytest.fixture
def at_repo_root(monkeypatch):
    monkeypatch.chdir(REPO)


def cli_stdout(capsys, *args: str) -> str:
    status = cli.main(list(args))
    out, err = capsys.readouterr()
    assert status == 0, err
    assert err == ""
    return out


# ---------------------------------------------------------------- golden files


@pytest.mark.parametrize("spec", SPECS, ids=SPEC_IDS)
def test_summary_golden(spec, capsys, golden, at_repo_root):
    golden(f"summary/{spec.stem}.txt", cli_stdout(capsys, "summary", rel(spec)))


@pytest.mark.parametrize("spec", SPECS, ids=SPEC_IDS)
def test_ir_golden(spec, capsys, golden, at_repo_root):
    out = cli_stdout(capsys, "ir", rel(spec))
    assert Program.from_json(out) == specc.load(rel(spec))
    golden(f"ir/{spec.stem}.json", out)


def test_spec_stems_are_unique_and_no_golden_is_stale():
    assert len(set(SPEC_IDS)) == len(SPEC_IDS)
    for stage, ext in (("summary", "txt"), ("ir", "json")):
        stale = {p.stem for p in (TESTS / "golden" / stage).glob(f"*.{ext}")} - set(SPEC_IDS)
        assert not stale, f"golden files for specs that no longer exist: {sorted(stale)}"


def test_seed_specs_are_all_covered():
    assert {p.stem for p in (REPO / "specs").glob("*.spec")} <= set(SPEC_IDS)
    assert len(list((REPO / "specs").glob("*.spec"))) >= 6


# ---------------------------------------------------------------- the IR round trip


@pytest.mark.parametrize("spec", SPECS, ids=SPEC_IDS)
def test_ir_json_round_trip(spec):
    program = specc.load(spec)
    again = Program.from_json(program.to_json())
    assert again == program
    assert again.to_json() == program.to_json()
    assert Program.from_json(program.to_json(indent=None)) == program
    for model in program:
        assert Model.from_json(model.to_json()) == model
        restored = Model.from_json(model.to_json())
        assert [x.attrs for x in restored.layers] == [x.attrs for x in model.layers]
        assert restored.weight_specs() == model.weight_specs()
    for train in program.trains.values():
        assert Train.from_json(train.to_json()) == train


def test_ir_values_can_be_copied():
    import copy

    program = specc.load(SPECS[0])
    assert copy.deepcopy(program) == program and copy.copy(program) is program
    for model in program:
        assert copy.deepcopy({"m": model})["m"] == model


def test_ir_attributes_are_plain_json_values():
    def plain(v) -> bool:
        if isinstance(v, (tuple, list)):
            return all(plain(x) for x in v)
        return v is None or isinstance(v, (bool, int, float, str))

    for spec in SPECS:
        for model in specc.load(spec):
            for layer in model.layers:
                assert all(plain(v) for v in layer.attrs.values()), (spec.stem, layer.name, dict(layer.attrs))


def test_train_blocks_fill_in_every_default():
    train = specc.load(REPO / "specs" / "perceptron.spec").trains["perceptron"]
    assert train.optimizer.name == "sgd"
    assert dict(train.optimizer.args) == {"lr": 0.1, "momentum": 0.0, "nesterov": False}
    assert dict(train.data.args) == {"validation_split": 0.2}
    adam = specc.loads("model m {\n input [2]\n Dense(2, activation=softmax)\n}\n"
                       "train m {\n data = mnist\n loss = cross_entropy\n}\n").trains["m"]
    assert adam.optimizer.name == "adam"
    assert dict(adam.optimizer.args) == {"lr": 0.001, "beta1": 0.9, "beta2": 0.999, "epsilon": 1e-7}
    assert (adam.batch, adam.epochs, adam.seed, adam.metrics, adam.patience) == (32, 1, 0, (), None)
    assert adam.schedule.name == "constant"


# Keras 3's defaults (keras.optimizers.SGD, Adam, AdamW, RMSprop, Adagrad), written
# out: the backends' update tests take their hyperparameters from the IR, so the
# defaults are checked here, against Keras, not against specc's own table.
KERAS_OPTIMIZER_DEFAULTS = {
    "sgd": {"lr": 0.01, "momentum": 0.0, "nesterov": False},
    "adam": {"lr": 0.001, "beta1": 0.9, "beta2": 0.999, "epsilon": 1e-7},
    "adamw": {"lr": 0.001, "beta1": 0.9, "beta2": 0.999, "epsilon": 1e-7, "weight_decay": 0.004},
    "rmsprop": {"lr": 0.001, "rho": 0.9, "momentum": 0.0, "epsilon": 1e-7},
    "adagrad": {"lr": 0.001, "initial_accumulator": 0.1, "epsilon": 1e-7},
}


@pytest.mark.parametrize("name", sorted(KERAS_OPTIMIZER_DEFAULTS))
def test_optimizer_defaults_are_keras(name):
    program = specc.loads("model m {\n input [2]\n Dense(2, activation=softmax)\n}\n"
                          f"train m {{\n data = mnist\n loss = cross_entropy\n optimizer = {name}\n}}\n")
    assert dict(program.trains["m"].optimizer.args) == KERAS_OPTIMIZER_DEFAULTS[name]


# ---------------------------------------------------------------- report invariants

_ROW = re.compile(r"^(?P<label>\S+ \(\w+\))\s+(?P<shape>\(None(?:, \d+)*\))\s+(?P<params>[\d,]+)\s+(?P<macs>[\d,]+)"
                  r"(?:\s+(?P<connected>\S+))?$")


def _number(line: str, key: str) -> int:
    m = re.search(re.escape(key) + r": ([\d,]+)", line)
    assert m, (key, line)
    return int(m.group(1).replace(",", ""))


@pytest.mark.parametrize("spec", SPECS, ids=SPEC_IDS)
def test_param_column_sums_to_total(spec):
    """torchinfo's invariant: the table's Param # column adds up to Total params."""
    for model in specc.load(spec):
        report = specc.summary(model)
        text = str(report)
        rows = [m for m in map(_ROW.match, text.splitlines()) if m]
        if not model.is_sequential:  # Keras's functional summary: an input row, and what each node reads
            assert rows.pop(0).group("label") == "input (InputLayer)"
            assert re.findall(r"(\S+)\[0\]\[0\]", text) == [name for x in model.layers for name in x.inputs]
        assert len(rows) == len(model.layers)
        assert [r.group("label") for r in rows] == [f"{x.name} ({x.kind})" for x in model.layers]
        footer = {line.split(":")[0]: line for line in text.splitlines() if ": " in line}
        total = _number(footer["Total params"], "Total params")
        trainable = _number(footer["Trainable params"], "Trainable params")
        non_trainable = _number(footer["Non-trainable params"], "Non-trainable params")
        assert sum(int(r.group("params").replace(",", "")) for r in rows) == total == model.params
        assert trainable + non_trainable == total
        assert (total, trainable, non_trainable) == (report.total, report.trainable, report.non_trainable)
        assert sum(int(r.group("macs").replace(",", "")) for r in rows) == report.total_macs
        for r, layer in zip(rows, model.layers):
            assert r.group("shape") == "(None, " + ", ".join(map(str, layer.output_shape)) + ")"


def test_summary_json_format(capsys, at_repo_root):
    data = json.loads(cli_stdout(capsys, "summary", "specs/lenet.spec", "--format", "json"))
    assert data["model"] == "lenet"
    assert (data["total_params"], data["trainable_params"], data["non_trainable_params"]) == (1_256_080, 1_256_080, 0)
    assert sum(layer["params"] for layer in data["layers"]) == data["total_params"]
    assert data["layers"][0] == {"name": "conv2d_1", "type": "Conv2D", "output_shape": [None, 20, 28, 28],
                                 "params": 520, "trainable_params": 520, "mult_adds": 407_680,
                                 "activation": "relu", "inputs": ["input"]}
    both = json.loads(cli_stdout(capsys, "summary", "specs/gan.spec", "--format", "json"))
    assert [(m["model"], m["total_params"], m["non_trainable_params"]) for m in both] == [
        ("generator", 732_929, 12_544), ("discriminator", 13_185, 0)]
    one = json.loads(cli_stdout(capsys, "summary", "specs/gan.spec", "--format", "json", "--model", "discriminator"))
    assert one["total_params"] == 13_185


def test_summary_markdown_format(capsys, at_repo_root):
    out = cli_stdout(capsys, "summary", "specs/gan.spec", "--format", "markdown")
    assert "| Layer (type) | Output Shape | Param # | Mult-Adds |" in out
    assert "- Total params: 732,929" in out
    assert "- Non-trainable params: 12,544" in out
    assert "- Total params: 13,185" in out
    assert "| batch_norm_1 (BatchNorm) | (None, 6272) | 25,088 |" in out
    rows = [line for line in out.splitlines() if line.startswith("| ") and "(None" in line]
    assert sum(int(line.split("|")[3].strip().replace(",", "")) for line in rows) == 732_929 + 13_185


def test_summary_of_one_model(capsys, at_repo_root):
    out = cli_stdout(capsys, "summary", "specs/gan.spec", "--model", "generator")
    assert out.startswith('Model: "generator"') and "discriminator" not in out


def test_ir_of_one_model(capsys, at_repo_root):
    out = cli_stdout(capsys, "ir", "specs/gan.spec", "--model", "discriminator")
    assert Model.from_json(out) == specc.load("specs/gan.spec")["discriminator"]


# ---------------------------------------------------------------- no framework imports

_PROBE = """
import sys
from specc.cli import main
status = main(sys.argv[1:])
banned = {banned!r}
loaded = sorted(m for m in sys.modules if m.split(".")[0] in banned)
print("LOADED:" + ",".join(loaded), file=sys.stderr)
sys.exit(status)
"""


@pytest.mark.parametrize("args, status", [
    (("check", "specs/lenet.spec", "specs/gan.spec", "specs/lstm.spec"), 0),
    (("summary", "specs/gan.spec"), 0),
    (("summary", "specs/lenet.spec", "--format", "json"), 0),
    (("ir", "specs/autoencoder.spec"), 0),
    (("check", "tests/bad_specs/unknown_layer.spec"), 1),
    (("summary", "specs/resnet50.spec"), 0),
    (("check", "tests/specs/graphs/graph_import.spec", "tests/bad_specs/import_error_inside.spec"), 1),
], ids=lambda v: " ".join(v) if isinstance(v, tuple) else f"exit {v}")
def test_front_end_commands_import_no_framework(args, status):
    code = _PROBE.format(banned=set(FRAMEWORKS))
    result = subprocess.run([sys.executable, "-c", code, *args], cwd=REPO, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == status, result.stderr
    assert "Traceback" not in result.stderr
    if status == 0:
        assert result.stdout.strip(), "a clean command prints its result"
    else:
        assert "error:" in result.stderr
    loaded = result.stderr.rsplit("LOADED:", 1)[1].strip()
    assert loaded == "", f"specc {' '.join(args)} imported {loaded}"


def test_python_m_specc_imports_no_framework():
    """`python -m specc check|summary` under -X importtime: no framework module appears."""
    for args in (("check", "specs/lenet.spec"), ("summary", "specs/gan.spec")):
        result = subprocess.run([sys.executable, "-X", "importtime", "-m", "specc", *args], cwd=REPO,
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        imported = {line.rsplit("|", 1)[-1].strip().split(".")[0]
                    for line in result.stderr.splitlines() if line.startswith("import time:")}
        assert len(imported) > 10  # the probe really saw imports
        assert not imported & set(FRAMEWORKS), sorted(imported & set(FRAMEWORKS))


# ---------------------------------------------------------------- big specs (timings: benchmarks/frontend_speed.py)


def flat_spec() -> str:
    """The 3,000 layers, one per line, that benchmarks/frontend_speed.py times (its very text)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("frontend_speed", REPO / "benchmarks" / "frontend_speed.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.flat_spec()


def test_three_thousand_layer_spec_checks_and_summarises():
    model = specc.loads(flat_spec(), filename="deep.spec")["deep"]
    assert len(model.layers) == 3000
    # per 5 lines: two Dense(64) on 64 features (64*64 + 64 each), one BatchNorm(64) (4*64, half non-trainable)
    assert [x.name for x in model.layers[:6]] == ["dense_1", "batch_norm_1", "dropout_1", "leaky_relu_1",
                                                  "block_4", "dense_2"]
    assert model.layers[-1].name == "block_2999" and model.output_shape == (64,)
    report = specc.summary(model)
    assert (report.total, report.non_trainable) == (1200 * (64 * 64 + 64) + 600 * 4 * 64, 600 * 2 * 64)
    table = str(report)
    rows = [line for line in table.splitlines() if _ROW.match(line)]
    assert len(rows) == 3000
    assert rows[-1].startswith("block_2999 (Dense)")
    assert "Total params: 5,145,600" in table and "Non-trainable params: 76,800" in table


def test_summary_in_a_fresh_process_imports_no_framework():
    """`python -m specc summary` as a user runs it: the right table, and no framework
    among the modules imported (-X importtime lists them all)."""
    result = subprocess.run([sys.executable, "-X", "importtime", "-m", "specc", "summary", "specs/lenet.spec"],
                            cwd=REPO, capture_output=True, text=True, timeout=60,
                            env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith('Model: "lenet"')
    assert "Total params: 1,256,080" in result.stdout
    imported = {line.rsplit("|", 1)[-1].strip().split(".")[0]
                for line in result.stderr.splitlines() if line.startswith("import time:")}
    assert {"specc", "lark", "numpy"} <= imported  # the probe really saw the imports
    assert not imported & set(FRAMEWORKS), sorted(imported & set(FRAMEWORKS))


# ---------------------------------------------------------------- the golden helper itself


def test_golden_helper_fails_on_missing_file_and_does_not_create_it(tmp_path):
    from conftest import check_golden

    path = tmp_path / "new.txt"
    with pytest.raises(pytest.fail.Exception, match="does not exist"):
        check_golden(path, "hello\n", update=False)
    assert not path.exists()


def test_golden_helper_shows_a_diff_and_the_path(tmp_path):
    from conftest import check_golden

    path = tmp_path / "old.txt"
    path.write_text("one\ntwo\nthree\n")
    with pytest.raises(pytest.fail.Exception) as info:
        check_golden(path, "one\n2\nthree\n", update=False)
    message = str(info.value)
    assert str(path) in message
    assert "-two\n+2\n" in message
    check_golden(path, "one\ntwo\nthree\n", update=False)  # equal: passes


def test_golden_helper_updates_only_with_the_flag(tmp_path):
    from conftest import check_golden

    path = tmp_path / "sub" / "g.txt"
    check_golden(path, "fresh\n", update=True)
    assert path.read_text() == "fresh\n"
    check_golden(path, "fresh\n", update=False)
    with pytest.raises(pytest.fail.Exception):
        check_golden(path, b"\x00\x01", update=False)
    check_golden(path, b"\x00\x01", update=True)
    check_golden(path, b"\x00\x01", update=False)


def test_golden_arrays_helper(tmp_path):
    import numpy as np
    from conftest import check_golden_arrays

    path = tmp_path / "w.npz"
    arrays = {"dense_1/kernel": np.arange(6, dtype=np.float32).reshape(2, 3), "dense_1/bias": np.zeros(3, np.float32)}
    with pytest.raises(pytest.fail.Exception, match="does not exist"):
        check_golden_arrays(path, arrays, update=False)
    check_golden_arrays(path, arrays, update=True)
    check_golden_arrays(path, {k: v + 1e-9 for k, v in arrays.items()}, update=False)
    with pytest.raises(pytest.fail.Exception, match="dense_1/kernel: values differ"):
        check_golden_arrays(path, {**arrays, "dense_1/kernel": arrays["dense_1/kernel"] + 1}, update=False)
    with pytest.raises(pytest.fail.Exception, match="missing arrays: dense_1/bias"):
        check_golden_arrays(path, {"dense_1/kernel": arrays["dense_1/kernel"]}, update=False)
    with pytest.raises(pytest.fail.Exception, match="float32"):
        check_golden_arrays(path, {**arrays, "dense_1/bias": np.zeros(3, np.float64)}, update=False)
