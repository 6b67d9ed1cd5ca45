"""Every kind of mistake a user can make is one diagnostic at the right place.

Each bad spec in tests/bad_specs/ is checked twice: its first (usually only)
diagnostic has the expected line, column, message and hint, and the full
stderr of `specc check tests/bad_specs/<case>.spec` equals the golden file
tests/golden/diagnostics/<case>.txt (regenerate with --update-golden).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import specc
from specc import cli

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
BAD = TESTS / "bad_specs"


def diagnostics_of(case: str) -> list[specc.Diagnostic]:
    with pytest.raises(specc.SpecError) as info:
        specc.load(f"tests/bad_specs/{case}.spec")
    return info.value.diagnostics


@pytest.fixture(autouse=True)
def at_repo_root(monkeypatch):
    """Paths in diagnostics are exactly as given, so run from the repository root."""
    monkeypatch.chdir(REPO)


# case: (line, column, message (a part of it), hint (a part of it)[, file when not the case's own])
CASES = {
    # ---------------------------------------------------------------- syntax
    "syntax_missing_paren": (5, 5, "unexpected 'Dense'; expected ',' or ')'", "the '(' on line 4 is never closed"),
    "syntax_stray_token": (3, 14, "unexpected ')'", "brackets must be balanced"),
    "syntax_unclosed_brace": (3, 34, "unexpected end of file", "the '{' on line 1 is never closed; add a '}'"),
    "syntax_bad_character": (3, 35, "unexpected character '@'", "no decorators or operators with '@'"),
    "syntax_missing_comma": (3, 15, "unexpected 'kernel'; expected ',' or ')'", "separate arguments"),
    # ---------------------------------------------------------------- names
    "unknown_layer": (4, 5, "unknown layer 'MaxPol'", "did you mean MaxPool?"),
    "unknown_layer_keras_alias": (4, 5, "unknown layer 'MaxPooling2D'", "in specc this layer is called MaxPool"),
    "unknown_layer_torch_alias": (3, 5, "unknown layer 'Conv2d'", "in specc this layer is called Conv2D"),
    "unknown_argument": (3, 26, "Conv2D has no argument 'strides'", "did you mean stride?"),
    "unknown_activation": (3, 16, "unknown activation 'rellu'", "did you mean relu?"),
    "unknown_padding": (3, 26, "unknown padding 'sme'", "did you mean same?"),
    "unknown_constant": (5, 11, "unknown name 'hiden'", "did you mean hidden?"),
    "let_unknown_name": (2, 13, "unknown name 'hiden'", "did you mean hidden?"),
    "nested_too_deeply": (3, 9, "this expression is nested too deeply", "split it with `let`"),
    # ---------------------------------------------------------------- arguments
    "too_many_positional": (3, 15, "Dense takes 1 positional argument (units), got 2", "name the others"),
    "missing_required_argument": (3, 5, "Conv2D needs kernel", "Conv2D(filters, kernel;"),
    "duplicate_argument": (3, 15, "argument 'units' is given twice", "give each argument once"),
    "positional_after_keyword": (3, 24, "a positional argument cannot follow a keyword argument",
                                 "put positional arguments first"),
    "positional_after_keyword_first": (3, 28, "a positional argument cannot follow a keyword argument",
                                 "put positional arguments first"),
    "float_where_int": (3, 11, "units must be a positive integer, got 12.5", "whole number"),
    "true_division": (3, 11, "units must be an integer, got 392.0", "write 392 (use // for integer division)"),
    # ---------------------------------------------------------------- shapes
    "shape_mismatch_after_flatten": (7, 5, "Conv2D needs an input of shape [C, H, W], but dense_1 outputs [500]",
                                     "put Reshape([...]) before it, or move it above Flatten()"),
    "kernel_larger_than_input": (7, 5, "Conv2D kernel 5x5 does not fit its padded input 3x3", "padding=same"),
    "reshape_size_mismatch": (4, 13, "cannot reshape [6000] (6000 values) to [128, 7, 7] (6272 values)",
                              "the number of values must stay the same"),
    # ---------------------------------------------------------------- model structure
    "missing_input": (1, 7, "model 'm' has no input line", "input [1, 28, 28]"),
    "input_not_first": (3, 5, "input must be the first line of a model", "move `input [...]` above"),
    "duplicate_model": (6, 7, "model 'm' is already defined on line 1", "unique"),
    "duplicate_layer_name": (4, 5, "layer name 'hidden' is already used on line 3", "unique"),
    "duplicate_let": (2, 5, "constant 'hidden' is already defined on line 1", "once"),
    # ---------------------------------------------------------------- train blocks
    "train_unknown_key": (9, 5, "unknown train setting 'epoch'", "did you mean epochs?"),
    "train_unknown_optimizer": (9, 17, "unknown optimizer 'adamm'", "did you mean adam?"),
    "train_unknown_loss": (8, 12, "unknown loss 'crossentropy'", "did you mean cross_entropy?"),
    "train_unknown_metric": (9, 16, "unknown metric 'acuracy'", "did you mean accuracy?"),
    "train_unknown_dataset": (7, 12, "unknown data set 'mnsit'", "did you mean mnist?"),
    "train_unknown_model": (6, 7, "train block for unknown model 'mpl'", "did you mean mlp?"),
    "train_missing_data": (6, 7, "train block for 'm' needs data", "data = mnist("),
    "train_missing_loss": (6, 7, "train block for 'm' needs loss", "loss = cross_entropy"),
    "train_cross_entropy_on_sigmoid": (8, 12, "cross_entropy expects the model to end in softmax",
                                       "use loss = binary_cross_entropy"),
    "train_bad_validation_split": (7, 18, "validation_split must be in [0, 1)", "validation_split=0.2"),
    # ---------------------------------------------------------------- version 2: graphs and blocks
    "residual_shape_mismatch": (4, 5, "residual body gives [16, 16, 16], but the identity shortcut gives its "
                                "input [8, 32, 32]", "`shortcut { Conv2D(16, kernel=1, stride=2) }`"),
    "residual_shortcut_mismatch": (2, 5, "residual body gives [8, 8, 8], but its shortcut gives [8, 16, 16]",
                                   "make the shortcut give [8, 8, 8], e.g. `shortcut { Conv2D(8, kernel=1, stride=2) }`"),
    "concat_branch_mismatch": (3, 5, "concat branches must agree on every axis but 0: branch 1 gives [4, 16, 16], "
                               "branch 3 gives [4, 14, 14]", "only axis 0 is joined"),
    "concat_one_branch": (3, 5, "concat needs at least two branches, got 1", "branch { ... } branch { ... }"),
    "unknown_block": (7, 5, "unknown block 'basik'", "did you mean basic?"),
    "unknown_block_argument": (7, 15, "basic has no argument 'strid'", "did you mean stride?"),
    "block_too_many_arguments": (7, 18, "basic takes 2 positional arguments (filters, stride), got 3",
                                 "name the others: basic(filters, stride=1)"),
    "block_missing_argument": (7, 5, "basic needs filters", "basic takes basic(filters, stride=1)"),
    "block_calls_itself": (3, 5, "block 'tower' calls itself: tower -> tower", "cannot call itself"),
    "block_calls_itself_through_another": (3, 5, "block 'ping' calls itself through pong: ping -> pong -> ping",
                                           "directly or through other blocks"),
    "duplicate_block": (5, 7, "block 'basic' is already defined on line 1", "block names must be unique"),
    "block_input_line": (2, 5, "a block has no input line", "reads what comes before its call"),
    "block_body_error": (2, 12, "Conv2D: filters must be a positive integer, got 0",
                         "(in conv_bn_2, called at tests/bad_specs/block_body_error.spec:9)"),
    "repeat_zero": (5, 12, "repeat needs a whole number of times, at least 1, got 0", "writes its body N times"),
    "repeat_named_layer": (4, 9, "layer name 'hidden' would be given more than once by repeat",
                           "leave layers inside repeat unnamed"),
    "merge_written_as_layer": (4, 5, "Add joins branches and is not written as a layer", "write residual { ... }"),
    "import_missing": (1, 1, 'cannot import "imports/blocs.spec": file not found '
                       '(looked for tests/bad_specs/imports/blocs.spec)',
                       "did you mean blocks.spec?"),
    # A diagnostic in an imported file is at that file's line (the 5th item: the file).
    "import_cycle": (2, 1, "import cycle: tests/bad_specs/import_cycle.spec -> tests/bad_specs/imports/cycle_b.spec"
                     " -> tests/bad_specs/import_cycle.spec", "move what both need into a third file",
                     "tests/bad_specs/imports/cycle_b.spec"),
    "import_error_inside": (3, 45, "Conv2D: unknown activation 'rellu'",
                            "did you mean relu? (in conv_relu_1, called at tests/bad_specs/import_error_inside.spec:5)",
                            "tests/bad_specs/imports/broken_block.spec"),
    "import_syntax_error_inside": (3, 20, "unexpected 'kernel'; expected ',' or ')'", "separate arguments",
                                   "tests/bad_specs/imports/syntax_error.spec"),
    # ---------------------------------------------------------------- version 2: slips in the new forms
    "syntax_layer_in_concat": (4, 9, "unexpected 'Dense'; expected ';', 'branch', '}' or a new line",
                               "each path is written `branch { ... }`"),
    "syntax_branch_outside_concat": (3, 5, "unexpected 'branch'", "`branch { ... }` goes inside `concat { ... }`"),
    "syntax_repeat_without_count": (3, 12, "unexpected '{'", "repeat needs a count: `repeat N { ... }`"),
    "syntax_block_without_braces": (1, 12, "unexpected 'Dense'; expected '{'", "`block NAME(params) { ... }`"),
    "syntax_import_unquoted": (1, 8, "unexpected 'other'; expected a string", 'import "other.spec"'),
    "syntax_shortcut_without_body": (3, 27, "unexpected 'shortcut'; expected ';', '}' or a new line",
                                     "a shortcut takes a body"),
    "syntax_shortcut_without_residual": (3, 14, "unexpected '{'", "follows a `residual { ... }`"),
    "syntax_block_inside_model": (3, 5, "unexpected 'block'", "blocks are defined at file level"),
    "block_default_before_required": (1, 14, "parameter 'g' has no default but follows one that has",
                                      "defaults last"),
    "block_duplicate_parameter": (1, 24, "parameter 'filters' is listed twice", "its own name"),
    "block_default_uses_parameter": (2, 18, "the default of 'g' uses the parameter 'f'", "pass g at the call"),
    "repeat_zero_in_block": (2, 12, "repeat needs a whole number of times, at least 1, got 0",
                             "(in b_1, called at tests/bad_specs/repeat_zero_in_block.spec:6)"),
    "concat_axis_out_of_range": (3, 12, "concat axis 1 is out of range for inputs of shape [3]", "0..0"),
    "concat_time_axis_mismatch": (3, 5, "branch 1 gives [6, 3], branch 2 gives [6, 2]", "only axis 0 is joined"),
    "residual_sequence_mismatch": (3, 5, "residual body gives [4], but the identity shortcut gives its input [6, 4]",
                                   "add a shortcut"),
    "residual_in_block_mismatch": (2, 5, "residual body gives [8, 8, 8], but the identity shortcut gives its input"
                                   " [3, 8, 8]", "`shortcut { Conv2D(8, kernel=1) }` (in basic_2, called at "
                                   "tests/bad_specs/residual_in_block_mismatch.spec:7)"),
    "import_cycle_three_files": (2, 1, "import cycle: tests/bad_specs/import_cycle_three_files.spec -> "
                                 "tests/bad_specs/imports/cycle3_b.spec -> tests/bad_specs/imports/cycle3_c.spec -> "
                                 "tests/bad_specs/import_cycle_three_files.spec", "into a third file",
                                 "tests/bad_specs/imports/cycle3_c.spec"),
    "import_error_two_deep": (5, 5, "Conv2D needs an input of shape [C, H, W], but head_1/dense_1 outputs [3]",
                              "(in head_1, called at tests/bad_specs/import_error_two_deep.spec:5)",
                              "tests/bad_specs/imports/deep_broken.spec"),
    "import_same_block_name": (3, 7, "block 'unit' is already defined on tests/bad_specs/imports/blocks.spec:2",
                               "imported blocks included"),
    "import_duplicate_model": (3, 7, "model 'head' is already defined on tests/bad_specs/imports/with_model.spec:2",
                               "imported models included"),
    # ---------------------------------------------------------------- sizes no backend holds (catalogue.MAX_SIZE)
    "residual_after_huge_padding": (3, 25, "Conv2D: padding must be at most 2,147,483,647 (2**31 - 1), "
                                    "got 99999999999999999999", "no backend holds a size this large"),
    "dense_too_many_units": (3, 11, "Dense: units must be at most 2,147,483,647 (2**31 - 1), got "
                             "99999999999999999999", "no backend holds a size this large"),
    "conv_output_too_large": (4, 5, "Conv2D would output [4, 2000026, 2000026] per sample: 16,000,416,002,704 "
                              "values, more than specc's limit of 2,147,483,647 (2**31 - 1)",
                              "no backend holds a tensor this large"),
    "model_too_many_params": (2, 7, "model 'wide' has 3,200,080,000 parameters, more than specc's limit of "
                              "2,147,483,647 (2**31 - 1)", "2**31 float32 parameters need 32 GiB"),
    "input_too_large": (2, 11, "input [3, 65536, 65536] holds 12,884,901,888 values per sample, more than "
                        "specc's limit", "no backend holds a sample this large"),
    # ---------------------------------------------------------------- not text
    "binary_nul": (3, 1, "contains a NUL byte", "UTF-8 text"),
    "not_utf8": (1, 6, "byte 0xe9 is not valid UTF-8", "save the file as UTF-8"),
}

# Cases with more than one diagnostic, tested on their own below.
MULTI = {"several_errors", "several_syntax_errors", "let_failed_no_follow_on"}


@pytest.mark.parametrize("case", sorted(CASES))
def test_diagnostic(case):
    line, column, message, hint, *file = CASES[case]
    diags = diagnostics_of(case)
    assert len(diags) == 1, "expected exactly one diagnostic (no follow-on noise):\n" + "\n".join(
        d.render() for d in diags)
    (d,) = diags
    assert (d.file, d.line, d.column) == (file[0] if file else f"tests/bad_specs/{case}.spec", line, column)
    assert message in d.message
    assert d.hint, "every diagnostic here should come with a hint"
    assert hint in d.hint


def render_check(case: str, capsys) -> str:
    status = cli.main(["check", f"tests/bad_specs/{case}.spec"])
    out, err = capsys.readouterr()
    assert status == 1
    assert out == ""
    return err


@pytest.mark.parametrize("case", sorted(p.stem for p in BAD.glob("*.spec")))
def test_rendered_diagnostics_golden(case, capsys, golden):
    err = render_check(case, capsys)
    assert "Traceback" not in err
    golden(f"diagnostics/{case}.txt", err)


def test_every_bad_spec_is_tested_and_every_golden_has_a_spec():
    specs = {p.stem for p in BAD.glob("*.spec")}
    assert specs == set(CASES) | MULTI
    goldens = {p.stem for p in (TESTS / "golden" / "diagnostics").glob("*.txt")}
    assert goldens <= specs, f"stale golden files without a bad spec: {sorted(goldens - specs)}"


def test_contract_example_renders_exactly(capsys):
    """The language contract's own example, character for character (but the path)."""
    assert render_check("shape_mismatch_after_flatten", capsys) == (
        "tests/bad_specs/shape_mismatch_after_flatten.spec:7:5: error: "
        "Conv2D needs an input of shape [C, H, W], but dense_1 outputs [500]\n"
        "    Conv2D(50, kernel=5)\n"
        "    ^~~~~~~~~~~~~~~~~~~~\n"
        "hint: put Reshape([...]) before it, or move it above Flatten()\n"
    )


# ---------------------------------------------------------------- several errors at once


def test_several_independent_errors_reported_together_sorted_by_line():
    diags = diagnostics_of("several_errors")
    assert [(d.line, d.column) for d in diags] == [(5, 11), (7, 15), (12, 5), (14, 15), (20, 5)]
    assert [d.message for d in diags] == [
        "unknown name 'hiden'",
        "Dense: unknown activation 'softmaxx'",
        "unknown layer 'MaxPol'",
        "Dense has no argument 'unitz'",
        "unknown train setting 'epoch'",
    ]
    assert [d.hint for d in diags] == ["did you mean hidden?", "did you mean softmax?", "did you mean MaxPool?",
                                      "did you mean units?", "did you mean epochs?"]


def test_several_syntax_errors_reported_together():
    diags = diagnostics_of("several_syntax_errors")
    assert [(d.line, d.column) for d in diags] == [(3, 15), (4, 18), (5, 34)]
    assert [d.message.split(";")[0] for d in diags] == [
        "unexpected 'activation'", "unexpected character '$'", "unexpected ')'"]
    assert all(d.hint for d in diags)


def test_a_failed_let_is_reported_once_and_its_uses_stay_silent():
    diags = diagnostics_of("let_failed_no_follow_on")
    assert [(d.line, d.column, d.message) for d in diags] == [
        (2, 11, "number too large"), (3, 12, "division by zero")]


def test_let_of_a_known_word_aliases_it():
    program = specc.loads("let act = relu\nlet pad = same\nlet opt = sgd\nlet loss_word = mse\n"
                          "model m {\n input [1, 4, 4]\n Conv2D(2, 3, padding=pad, activation=act)\n}\n"
                          "train m {\n data = mnist\n loss = loss_word\n optimizer = opt\n}\n")
    conv = program["m"].layers[0]
    assert (conv.attrs["activation"], conv.attrs["padding"]) == ("relu", ((1, 1), (1, 1)))
    assert (program.trains["m"].loss, program.trains["m"].optimizer.name) == ("mse", "sgd")


@pytest.mark.parametrize("text, message, hint", [
    ("let a = relux\n", "unknown name 'relux'", "did you mean relu?"),
    ("let a = 3\nlet b = aa\n", "unknown name 'aa'", "did you mean a?"),
    ("let b = zzz\n", "unknown name 'zzz'", "define it above with `let zzz = ...`"),
])
def test_let_of_an_unknown_word_is_a_diagnostic_at_that_let(text, message, hint):
    with pytest.raises(specc.SpecError) as info:
        specc.loads(text, filename="let.spec")
    (d,) = info.value.diagnostics
    assert (d.line, d.message, d.hint) == (text.count("\n"), message, hint)


@pytest.mark.parametrize("setting, message, hint", [
    ("optimizer = adam(lrr=0.1)", "adam has no argument 'lrr'", "did you mean lr?"),
    ("optimizer = adam(0.1, 0.2)", "adam takes 1 positional argument (lr), got 2", "name the others: adam(lr=0.001;"),
    ("optimizer = sgd(lr=0.1, lr=0.2)", "argument 'lr' is given twice", "give each argument once; sgd takes sgd("),
    ("schedule = step()", "step needs every", "step takes step(every, factor=0.1)"),
    ("schedule = step(factor=0.5, 3)", "a positional argument cannot follow a keyword argument",
     "put positional arguments first"),
    ("data = npz(3)", "npz: path must be a string in double quotes, got 3", 'npz("data.npz")'),
    ("optimizer = adam(lr=-1)", "adam: lr must be positive, got -1", None),
    ("data = mnist(validation_split=relu)", "mnist: validation_split must be a number in [0, 1), got 'relu'", None),
])
def test_train_calls_bind_like_layers_with_the_same_wording(setting, message, hint):
    text = f"model m {{\n input [2]\n Dense(2)\n}}\ntrain m {{\n data = mnist\n loss = mse\n {setting}\n}}\n"
    if setting.startswith("data"):
        text = text.replace(" data = mnist\n", "")
    with pytest.raises(specc.SpecError) as info:
        specc.loads(text, filename="train.spec")
    (d,) = info.value.diagnostics
    assert d.message == message
    if hint is None:
        assert d.hint is None, d.hint
    else:
        assert d.hint is not None and hint in d.hint, d.hint


def test_layers_and_calls_share_one_binder():
    """The same mistake in a layer and in an optimizer reads the same."""
    def message(text):
        with pytest.raises(specc.SpecError) as info:
            specc.loads(text)
        return info.value.message

    layer = message("model m {\n input [2]\n Dense(2, unitz=1)\n}\n")
    call = message("model m {\n input [2]\n Dense(2)\n}\ntrain m {\n data = mnist\n loss = mse\n"
                   " optimizer = adam(lrr=1)\n}\n")
    assert (layer, call) == ("Dense has no argument 'unitz'", "adam has no argument 'lrr'")


def test_synthetic_test_samples_default_is_the_documented_one():
    """data.py documents test_samples=max(1, samples // 5): the IR carries that value."""
    def data(args):
        text = f"model m {{\n input [4]\n Dense(3)\n}}\ntrain m {{\n data = synthetic({args})\n loss = mse\n}}\n"
        return dict(specc.loads(text).trains["m"].data.args)

    assert data("samples=100")["test_samples"] == 20
    assert data("samples=3")["test_samples"] == 1
    assert data("")["test_samples"] == 200
    assert data("samples=100, test_samples=7")["test_samples"] == 7


def test_synthetic_data_has_the_default_number_of_test_samples():
    from specc.data import load_dataset

    train = specc.loads("model m {\n input [4]\n Dense(3)\n}\ntrain m {\n data = synthetic(samples=100, "
                        "classes=3)\n loss = mse\n}\n").trains["m"]
    assert len(load_dataset(train.data, (4,), "float32").x_test) == 20


def test_every_terminal_is_named_and_worded():
    """New tokens cannot renumber generated names (__ANON_0) that syntax errors rely on."""
    from specc.parse import parser
    from specc.syntax_errors import _TOKEN_WORDS, _word

    names = {t.name for t in parser().terminals}
    assert not [n for n in names if n.startswith("__")]
    for name in names - {"WS", "COMMENT"}:
        assert _word(name) != name or name in _TOKEN_WORDS, name


@pytest.mark.parametrize("opener, closer", [("[", "]"), ("-", ""), ("+", "")])
def test_nesting_is_reported_where_it_starts_for_every_kind(opener, closer):
    text = "let a = 1\nmodel m {\n    input [3]\n    Dense(1 + " + opener * 400 + "1" + closer * 400 + ")\n}\n"
    with pytest.raises(specc.SpecError) as info:
        specc.loads(text)
    (d,) = info.value.diagnostics
    assert (d.line, d.column, d.message) == (4, 11, "this expression is nested too deeply")


def test_parentheses_alone_do_not_nest():
    assert specc.loads("let a = " + "(" * 3000 + "1" + ")" * 3000 + "\n").constants["a"] == 1


def test_errors_in_several_models_do_not_hide_each_other():
    text = ("model a {\n    input [3]\n    Dense(2, activation=rellu)\n}\n"
            "model b {\n    input [1, 4, 4]\n    Conv2D(2, kernel=5)\n}\n"
            "model c {\n    input [4]\n    Dense(2)\n}\n")
    with pytest.raises(specc.SpecError) as info:
        specc.loads(text, filename="three.spec")
    assert [d.line for d in info.value.diagnostics] == [3, 7]


# ---------------------------------------------------------------- the exception


def test_spec_error_carries_structured_diagnostics():
    with pytest.raises(specc.SpecError) as info:
        specc.loads("model m {\n    input [784]\n    Dense(10, activation=rellu)\n    MaxPol(2)\n}\n",
                    filename="api.spec")
    err = info.value
    assert len(err.diagnostics) == 2
    for d in err.diagnostics:
        assert isinstance(d, specc.Diagnostic)
        assert d.file == "api.spec"
        assert isinstance(d.line, int) and isinstance(d.column, int)
        assert d.message and d.hint
    first, second = err.diagnostics
    assert (first.line, first.column, first.hint) == (3, 15, "did you mean relu?")
    assert (second.line, second.column, second.message) == (4, 5, "unknown layer 'MaxPol'")
    # The single-error conveniences describe the first diagnostic.
    assert (err.file, err.line, err.column, err.message, err.hint) == (
        "api.spec", 3, 15, first.message, first.hint)
    assert str(err) == err.render()
    assert str(err).startswith("api.spec:3:15: error: Dense: unknown activation 'rellu'\n")


def test_default_filename_is_string_marker():
    with pytest.raises(specc.SpecError) as info:
        specc.loads("model m {\n    Dense(1)\n}\n")
    assert info.value.diagnostics[0].file == "<string>"


def test_tabs_are_expanded_before_placing_the_caret():
    with pytest.raises(specc.SpecError) as info:
        specc.loads("model m {\n\tinput [784]\n\tDense(10, activation=rellu)\n}\n", filename="tabs.spec")
    assert str(info.value).splitlines()[1:3] == [
        " " * 8 + "Dense(10, activation=rellu)",
        " " * 18 + "^" + "~" * 15,
    ]


def test_windows_line_endings_give_the_same_positions():
    text = "model m {\r\n    input [784]\r\n    MaxPol(2)\r\n}\r\n"
    with pytest.raises(specc.SpecError) as info:
        specc.loads(text)
    d = info.value.diagnostics[0]
    assert (d.line, d.column) == (3, 5)
    assert "\r" not in str(info.value)


# ---------------------------------------------------------------- files that are not text


@pytest.mark.parametrize("data, message", [
    (b"\x7fELF\x02\x01\x01\x00\x00\x00", "NUL byte"),
    (b"model m {\n    input [784]\x00\n}\n", "NUL byte"),
    (b"\xff\xfe m\x00o\x00d\x00", "NUL byte"),
    ("model m {  # caf\u00e9\n}\n".encode("latin-1"), "not valid UTF-8"),
    (b"\xc3\x28", "not valid UTF-8"),
])
def test_binary_and_non_utf8_input_via_api(tmp_path, data, message):
    with pytest.raises(specc.SpecError) as info:
        specc.loads(data, filename="blob.spec")
    assert message in info.value.message
    assert info.value.diagnostics[0].file == "blob.spec"
    path = tmp_path / "blob.spec"
    path.write_bytes(data)
    with pytest.raises(specc.SpecError) as info:
        specc.load(path)
    assert message in info.value.message
    assert info.value.line >= 1 and info.value.column >= 1
    assert str(info.value).startswith(f"{info.value.file}:{info.value.line}:{info.value.column}: error: ")


def test_non_utf8_position_counts_characters_not_bytes():
    data = "# \u00e9\u00e9 ok\nmodel m { # caf".encode("utf-8") + b"\xe9\n}\n"
    with pytest.raises(specc.SpecError) as info:
        specc.loads(data, filename="x.spec")
    d = info.value.diagnostics[0]
    assert (d.line, d.column) == (2, 16)


def test_nul_character_in_a_str_is_a_diagnostic():
    with pytest.raises(specc.SpecError) as info:
        specc.loads("model m {\x00}\n")
    assert info.value.line == 1


def test_utf8_byte_order_mark_is_accepted(tmp_path):
    path = tmp_path / "bom.spec"
    path.write_bytes(b"\xef\xbb\xbfmodel m {\n    input [3]\n    Dense(2)\n}\n")
    assert specc.load(path)["m"].params == 8


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONIOENCODING": "utf-8"}
    return subprocess.run([sys.executable, "-m", "specc", *args], cwd=REPO, capture_output=True, text=True,
                          env=env, timeout=60)


@pytest.mark.parametrize("case", ["binary_nul", "not_utf8"])
def test_binary_and_non_utf8_input_via_cli(case):
    result = run_cli("check", f"tests/bad_specs/{case}.spec")
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.startswith(f"tests/bad_specs/{case}.spec:")
    assert "error:" in result.stderr and "hint:" in result.stderr
    assert "Traceback" not in result.stderr


# ---------------------------------------------------------------- exit codes


def test_exit_code_0_when_clean():
    result = run_cli("check", "specs/lenet.spec", "specs/gan.spec")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert result.stdout.splitlines() == [
        "specs/lenet.spec: ok: lenet (1,256,080 params)",
        "specs/gan.spec: ok: generator (732,929 params), discriminator (13,185 params)",
    ]


def test_exit_code_1_on_diagnostics_and_every_file_is_checked():
    result = run_cli("check", "tests/bad_specs/unknown_layer.spec", "specs/mlp.spec",
                     "tests/bad_specs/unknown_activation.spec")
    assert result.returncode == 1
    assert "specs/mlp.spec: ok" in result.stdout
    assert "unknown_layer.spec:4:5: error:" in result.stderr
    assert "unknown_activation.spec:3:16: error:" in result.stderr


@pytest.mark.parametrize("args", [
    ("summary", "tests/bad_specs/unknown_layer.spec"),
    ("ir", "tests/bad_specs/unknown_layer.spec"),
    ("check", "tests/bad_specs/does_not_exist.spec"),
])
def test_exit_code_1_from_every_front_end_command(args):
    result = run_cli(*args)
    assert result.returncode == 1
    assert "error:" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("args, says", [
    (("frobnicate", "specs/lenet.spec"), "invalid choice"),
    (("check",), "required"),
    (("summary",), "required"),
    (("ir",), "required"),
    (("summary", "specs/lenet.spec", "--format", "xml"), "invalid choice"),
    (("summary", "specs/gan.spec", "--model", "generater"), "did you mean generator?"),
    ((), "usage"),
])
def test_exit_code_2_on_usage_errors(args, says):
    result = run_cli(*args)
    assert result.returncode == 2
    assert says in result.stderr
    assert result.stdout == ""
    assert "Traceback" not in result.stderr


def test_main_returns_statuses_in_process(capsys):
    assert cli.main(["check", "-q", "specs/lenet.spec"]) == 0
    assert capsys.readouterr().out == ""
    assert cli.main(["check", "tests/bad_specs/unknown_layer.spec"]) == 1
    assert cli.main(["summary", "specs/lenet.spec", "--format", "xml"]) == 2
    assert cli.main(["nonsense"]) == 2
    assert cli.main([]) == 2
    assert cli.main(["--version"]) == 0
