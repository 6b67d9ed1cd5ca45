"""Version 2 of the language: blocks, repeat, residual, concat and import
become a DAG IR with Keras-style names, source spans and a functional report.

The summaries and IR of the graph specs (tests/specs/graphs/) are golden
files (test_golden_frontend.py); their counts and shapes are checked against
Keras functional twins in test_keras_counts.py; the diagnostics of version 2
mistakes are bad specs in test_diagnostics.py. This file checks the rules
themselves: names, inputs, spans, imports, the report's new columns,
ResNet-50 against Keras's own and resnet_mnist against its Keras twin.
"""

from __future__ import annotations

import json
from math import prod
from pathlib import Path

import pytest

import specc
from specc.ir import INPUT, Model, Program

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
GRAPHS = TESTS / "specs" / "graphs"

BASIC = """
block basic(filters, stride=1) {
    residual {
        Conv2D(filters, kernel=3, stride=stride, padding=same)
        BatchNorm()
    } shortcut {
        Conv2D(filters, kernel=1, stride=stride)
    }
    ReLU()
}
"""


def model_of(body: str, input_line: str = "[3, 8, 8]", extra: str = BASIC) -> Model:
    return specc.loads(f"{extra}\nmodel m {{\n    input {input_line}\n{body}\n}}\n", filename="g.spec")["m"]


def names(model: Model) -> list[str]:
    return [layer.name for layer in model.layers]


# ---------------------------------------------------------------- names


def test_a_block_call_prefixes_the_names_inside_it():
    model = model_of("    basic(4)\n    basic(8, stride=2)")
    assert names(model) == [
        "basic_1/conv2d_1", "basic_1/batch_norm_1", "basic_1/conv2d_2", "basic_1/add_1", "basic_1/relu_1",
        "basic_2/conv2d_1", "basic_2/batch_norm_1", "basic_2/conv2d_2", "basic_2/add_1", "basic_2/relu_1",
    ]
    assert "basic_2/conv2d_1/kernel" in model.weight_specs()


def test_a_named_call_uses_the_users_name_and_nested_calls_nest():
    model = specc.load(GRAPHS / "graph_nested_blocks.spec")["nested"]
    got = set(names(model))
    assert {"conv_bn_1/conv2d_1", "stage_1/basic_1/conv_bn_2/conv2d_1", "stage_1/second/proj",
            "down/basic_1/add_1", "down/second/relu_2", "dense_1"} <= got
    assert "down/second/proj/kernel" in model.weight_specs()


def test_repeat_continues_the_scopes_counters_and_calls_get_fresh_names():
    model = model_of("    repeat 2 { Conv2D(3, kernel=1) }\n    repeat 2 { basic(3) }\n    Conv2D(3, kernel=1)")
    assert [n for n in names(model) if "/" not in n] == ["conv2d_1", "conv2d_2", "conv2d_3"]
    assert {n.split("/")[0] for n in names(model) if "/" in n} == {"basic_1", "basic_2"}


def test_merge_nodes_are_numbered_in_their_scope():
    model = model_of("    residual { }\n    residual { residual { } }\n"
                     "    concat { branch { }; branch { } }\n    basic(6)")
    assert names(model)[:4] == ["add_1", "add_2", "add_3", "concat_1"]
    assert "basic_1/add_1" in names(model)


def test_auto_names_go_around_user_names_in_the_same_scope():
    model = model_of("    Conv2D(3, kernel=1)\n    conv2d_1: Conv2D(3, kernel=1)\n    basic_1: basic(3)\n    basic(3)")
    assert names(model)[:2] == ["conv2d_2", "conv2d_1"]
    assert {n.split("/")[0] for n in names(model)[2:]} == {"basic_1", "basic_2"}


def test_a_stack_written_with_blocks_is_still_sequential_and_named_by_scope():
    model = model_of("    repeat 3 { Dense(4) }", input_line="[4]")
    assert model.is_sequential and names(model) == ["dense_1", "dense_2", "dense_3"]


# ---------------------------------------------------------------- the DAG


def test_residual_adds_body_and_shortcut_and_identity_reads_the_input():
    model = model_of("    residual { Conv2D(3, kernel=3, padding=same) }\n    basic(5)")
    add = model.layer("add_1")
    assert (add.kind, add.inputs, add.input_shapes) == ("Add", ("conv2d_1", INPUT), ((3, 8, 8), (3, 8, 8)))
    assert model.layer("basic_1/add_1").inputs == ("basic_1/batch_norm_1", "basic_1/conv2d_2")
    assert model.layer("basic_1/conv2d_2").inputs == ("add_1",)  # the shortcut reads the block's input
    assert not model.is_sequential
    assert [x.name for x in model.consumers("add_1")] == ["basic_1/conv2d_1", "basic_1/conv2d_2"]


def test_shortcut_may_start_the_line_after_the_residual_body():
    model = model_of("    residual {\n        Dense(4)\n    }   # body\n\n    # projection\n    shortcut {\n"
                     "        Dense(4)\n    }\n    shortcut: Dense(4)", input_line="[3]")
    assert names(model) == ["dense_1", "dense_2", "add_1", "shortcut"]
    assert model.layer("dense_2").line == 20 and model.layer("shortcut").line == 22


def test_concat_branches_read_one_input_and_join_on_the_axis():
    model = model_of("    concat(axis=0) {\n        branch { Conv2D(2, 1) }\n        branch { }\n"
                     "        branch { MaxPool(1) }\n    }")
    concat = model.layer("concat_1")
    assert concat.inputs == ("conv2d_1", INPUT, "max_pool_1")
    assert concat.output_shape == (8, 8, 8) and concat.attrs["axis"] == 0
    assert model.layer("max_pool_1").inputs == (INPUT,)
    last = model_of("    concat(axis=-1) { branch { Dense(2) }; branch { Dense(3) } }", input_line="[5, 4]")
    assert last.output_shape == (5, 5) and last.layer("concat_1").attrs["axis"] == 1


def test_nodes_are_in_topological_order_and_the_output_is_the_last():
    model = specc.load(REPO / "specs" / "resnet50.spec")["resnet50"]
    seen = {INPUT}
    for layer in model.layers:
        assert set(layer.inputs) <= seen, layer.name
        seen.add(layer.name)
    assert model.output_shape == (1000,) and model.final_activation == "softmax"


def test_nodes_carry_the_span_they_were_written_at():
    model = model_of("    Dense(4)\n    basic(5)", input_line="[3, 8, 8]")
    dense, conv, add = model.layer("dense_1"), model.layer("basic_1/conv2d_1"), model.layer("basic_1/add_1")
    assert (dense.file, dense.line, dense.column) == ("g.spec", 14, 5)
    assert (conv.file, conv.line, conv.column) == ("g.spec", 4, 9)  # inside the block's body
    assert (add.file, add.line, add.column) == ("g.spec", 3, 5)  # the residual keyword


def test_a_graph_ends_in_a_merge_with_a_linear_final_activation():
    model = model_of("    Dense(2, activation=softmax)\n    residual { Dense(2, activation=softmax) }", input_line="[2]")
    assert model.final_activation == "linear"


def test_version_1_json_still_loads():
    """IR JSON written before graphs (specc_ir 1: no inputs, input_shapes or spans) loads
    into the model specc builds today, but for the spans it did not record."""
    for stem, name in (("lenet", "lenet"), ("gan", "generator"), ("gan", "discriminator")):
        old = Program.from_json((TESTS / "golden" / "ir" / "v1" / f"{stem}.json").read_text())
        assert json.loads((TESTS / "golden" / "ir" / "v1" / f"{stem}.json").read_text())["specc_ir"] == 1
        # the spec each JSON was written from: a copy beside it where specs/ has moved on
        written_from = TESTS / "golden" / "ir" / "v1" / f"{stem}.spec"
        new = specc.load(written_from if written_from.exists() else REPO / "specs" / f"{stem}.spec")[name]
        unspanned = Model(new.name, new.input_shape, tuple(x.replace(file=None, column=None) for x in new.layers),
                          new.input_dtype)
        assert old[name] == unspanned
        assert old[name].is_sequential and old[name].weight_specs() == new.weight_specs()
    assert json.loads(specc.load(REPO / "specs" / "lenet.spec").to_json())["specc_ir"] == 2


# ---------------------------------------------------------------- blocks and repeat


def test_block_arguments_positional_keyword_defaults_and_words():
    extra = "block dense_act(units, act=relu, bias=true) {\n    Dense(units, activation=act, bias=bias)\n}\n"
    model = model_of("    dense_act(4)\n    dense_act(units=3, act=tanh)\n    dense_act(2, sigmoid, false)",
                     input_line="[5]", extra=extra)
    assert [(x.attrs["units"], x.attrs["activation"], x.attrs["bias"]) for x in model.layers] == [
        (4, "relu", True), (3, "tanh", True), (2, "sigmoid", False)]


def test_blocks_may_be_called_above_their_definition_and_see_the_lets_above_them():
    text = ("let width = 3\nmodel m {\n    input [2]\n    wide()\n}\n"
            "block wide(times=2) {\n    Dense(width * times)\n}\nlet later = 1\n")
    assert specc.loads(text)["m"].output_shape == (6,)


def test_repeat_counts_are_expressions_of_constants_and_parameters():
    extra = "let depth = 3\nblock stack(n) {\n    repeat n - 1 { Dense(2) }\n}\n"
    model = model_of("    repeat depth { Dense(2) }\n    stack(depth * 2)", input_line="[2]", extra=extra)
    assert len(model.layers) == 3 + 5


def test_unrolling_is_linear_in_the_nodes_made():
    """A spec of a few lines that unrolls to 3,000 nodes through blocks and repeats."""
    text = ("block unit(width) {\n    residual { Dense(width, activation=relu); Dense(width) }\n    ReLU()\n}\n"
            "block stage(width) {\n    repeat 25 { unit(width) }\n}\n"
            "model big {\n    input [16]\n    repeat 30 { stage(16) }\n}\n")
    model = specc.loads(text)["big"]
    assert len(model.layers) == 3000
    assert model.layer("stage_30/unit_25/relu_1") is model.layers[-1]
    assert specc.summary(model).total == 30 * 25 * 2 * (16 * 16 + 16)


# ---------------------------------------------------------------- the report


def test_graph_summary_shows_the_input_and_what_each_node_reads():
    table = str(specc.summary(model_of("    residual { Conv2D(3, kernel=1) }")))
    lines = table.splitlines()
    assert lines[2].split() == ["Layer", "(type)", "Output", "Shape", "Param", "#", "Mult-Adds", "Connected", "to"]
    assert lines[4].split() == ["input", "(InputLayer)", "(None,", "3,", "8,", "8)", "0", "0", "-"]
    assert "add_1 (Add)" in table and "conv2d_1[0][0]," in table
    assert [line.strip() for line in lines if line.strip().startswith("input[0][0]")] == ["input[0][0]"]


def test_add_counts_one_addition_per_element_per_extra_input():
    report = specc.summary(model_of("    concat { branch { residual { } }; branch { } }"))
    assert [r.macs for r in report.rows] == [3 * 8 * 8, 0]
    data = report.to_dict()
    assert [layer["inputs"] for layer in data["layers"]] == [["input", "input"], ["add_1", "input"]]
    assert data["mult_adds"] == 192


def test_resnet50_matches_keras_applications():
    import keras  # noqa: F401
    import keras

    reference = keras.applications.ResNet50(weights=None, input_shape=(224, 224, 3))
    trainable = sum(prod(w.shape) for w in reference.trainable_weights)
    report = specc.summary(specc.load(REPO / "specs" / "resnet50.spec")["resnet50"])
    assert (report.total, report.trainable, report.non_trainable) == (
        reference.count_params(), trainable, reference.count_params() - trainable)
    assert (report.total, report.non_trainable) == (25_636_712, 53_120)


def test_resnet_mnist_is_a_small_residual_network_that_keras_counts_alike():
    """specs/resnet_mnist.spec (README: 99% on MNIST): identity and projection
    shortcuts, under 300k params, counted as its Keras functional twin counts."""
    import keras  # noqa: F401
    from keras_twins import build_twin

    model = specc.load(REPO / "specs" / "resnet_mnist.spec")["resnet_mnist"]
    net = build_twin(model)
    trainable = sum(prod(w.shape) for w in net.trainable_weights)
    report = specc.summary(model)
    assert (report.total, report.trainable, report.non_trainable) == (
        net.count_params(), trainable, net.count_params() - trainable) == (78_426, 77_754, 672)
    identity, *projections = [layer for layer in model.layers if layer.kind == "Add"]
    assert identity.inputs[1] == model.layer("basic_1/conv_bn_1/conv2d_1").inputs[0]  # the block's input
    assert [model.layer(add.inputs[1]).kind for add in projections] == ["BatchNorm", "BatchNorm"]  # 1x1 conv + BN
    assert (model.input_shape, model.output_shape) == ((1, 28, 28), (10,))


# ---------------------------------------------------------------- imports


def test_an_import_brings_constants_blocks_and_models():
    program = specc.load(GRAPHS / "graph_import.spec")
    assert list(program.models) == ["head", "small"]
    assert dict(program.constants) == {"width": 8, "classes": 5}
    conv = program["small"].layer("conv_bn_relu_1/conv2d_1")
    assert conv.file == str(GRAPHS / "graph_lib.spec") and conv.line == 6
    assert program.trains["small"].data.args["classes"] == 5


def test_imports_are_relative_to_the_importing_file_or_to_the_cwd(tmp_path, monkeypatch):
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "a.spec").write_text('import "b.spec"\nblock two() {\n    one(); one()\n}\n')
    (tmp_path / "lib" / "b.spec").write_text("let n = 3\nblock one() {\n    Dense(n)\n}\n")
    monkeypatch.chdir(tmp_path)
    model = specc.loads('import "lib/a.spec"\nmodel m {\n    input [2]\n    two()\n}\n')["m"]
    assert names(model) == ["two_1/one_1/dense_1", "two_1/one_2/dense_1"]
    assert model.layers[0].file == "lib/b.spec"


def test_a_file_imported_twice_is_checked_once(tmp_path):
    (tmp_path / "d.spec").write_text("let n = 2\nblock one() {\n    Dense(n)\n}\n")
    (tmp_path / "b.spec").write_text('import "d.spec"\n')
    (tmp_path / "c.spec").write_text('import "d.spec"\n')
    (tmp_path / "a.spec").write_text('import "b.spec"\nimport "c.spec"\nmodel m {\n    input [2]\n    one()\n}\n')
    assert specc.load(tmp_path / "a.spec")["m"].output_shape == (2,)


def test_a_mistake_in_an_imported_file_is_shown_with_its_own_source_line(tmp_path):
    (tmp_path / "lib.spec").write_text("block bad() {\n    Dense(3, activation=rellu)\n}\n")
    (tmp_path / "main.spec").write_text('import "lib.spec"\nmodel m {\n    input [2]\n    bad()\n}\n')
    with pytest.raises(specc.SpecError) as info:
        specc.load(tmp_path / "main.spec")
    (d,) = info.value.diagnostics
    assert (d.file, d.line, d.column) == (str(tmp_path / "lib.spec"), 2, 14)
    assert str(info.value).splitlines()[1] == "    Dense(3, activation=rellu)"
    assert "in bad_1, called at" in d.hint
