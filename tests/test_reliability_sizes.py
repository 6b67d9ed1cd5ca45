"""Absurd sizes: no checker work grows with a number's value, and a size no
backend can hold (specc.catalogue.MAX_SIZE, 2**31 - 1: any size argument,
dimension, per-sample tensor, weight array or the total parameter count) is
a diagnostic at its span with a hint, found quickly: never a hang, never a
traceback, never a framework's "Maximum allowed dimension exceeded".
"""

from __future__ import annotations

import sys
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import specc
from specc import cli
from specc.catalogue import LAYERS, MAX_SIZE

QUICK = 1.0  # seconds one spec may take to check (a normal one takes milliseconds)

# Numbers beyond the limit, written as a spec writes them: a literal just over
# it, a 20-digit one, an expression at the arithmetic limit, and a literal
# longer than any float (which Python's int() refuses to read past 4300 digits).
HUGE = ["2147483648", "99999999999999999999", "2**61 * 2", "9" * 5000]
# Number arguments that are not sizes (epsilon, alpha, momentum, a rate) are
# computed in float32: beyond its range they are refused too.
FLOAT_HUGE = ["1e39", "1e300", "9" * 5000, "2**200"]
FLOAT_TYPES = ("float", "rate")

# Each layer kind in a setting where it is valid, and its required arguments.
CONTEXT = {
    "Dense": ("[4]", {"units": "3"}),
    "Conv2D": ("[3, 8, 8]", {"filters": "4", "kernel": "3"}),
    "ConvTranspose2D": ("[3, 8, 8]", {"filters": "4", "kernel": "3"}),
    "MaxPool": ("[3, 8, 8]", {"size": "2"}),
    "AvgPool": ("[3, 8, 8]", {"size": "2"}),
    "GlobalAvgPool": ("[3, 8, 8]", {}),
    "BatchNorm": ("[3, 8, 8]", {}),
    "LSTM": ("[5, 4]", {"units": "3"}),
    "GRU": ("[5, 4]", {"units": "3"}),
    "Embedding": ("[5] int", {"vocab": "10", "dim": "4"}),
    "Flatten": ("[3, 8, 8]", {}),
    "Reshape": ("[12]", {"shape": "[3, 4]"}),
    "Dropout": ("[4]", {"rate": "0.5"}),
    "LeakyReLU": ("[4]", {}),
}
# How a huge number is put into an argument of each type (several forms for lists).
FORMS = {
    "int": ["{}"],
    "pair": ["{}", "[1, {}]", "[{}, 1]"],
    "padding": ["{}", "[0, {}]"],
    "dims": ["[{}]", "[{}, -1]", "[3, {}]"],
    "axis": ["{}"],
    "float": ["{}", "{}.0", "-{}"],
    "rate": ["{}"],
}


def positions():
    """(kind, argument, spec text with {} where the huge number goes) for every
    numeric argument of every layer kind (merges aside: they are below)."""
    for kind, d in LAYERS.items():
        if d.merge:
            continue
        assert kind in CONTEXT or not any(a.type in FORMS for a in d.args), f"add {kind} to CONTEXT"
        if kind not in CONTEXT:
            continue
        shape, required = CONTEXT[kind]
        for arg in d.args:
            for form in FORMS.get(arg.type, []):
                given = {**required, arg.name: form}
                call = f"{kind}(" + ", ".join(f"{k}={v}" for k, v in given.items()) + ")"
                yield kind, arg.name, arg.type, f"model m {{\n    input {shape}\n    {call}\n}}\n"


POSITIONS = list(positions())
CASES = [(f"{kind}-{arg}-{i}-{j}", text.replace("{}", huge))
         for i, (kind, arg, kind_of, text) in enumerate(POSITIONS)
         for j, huge in enumerate(FLOAT_HUGE if kind_of in FLOAT_TYPES else HUGE)]


def check_fails_quickly(text: str) -> list[specc.Diagnostic]:
    """The front end refuses `text` with diagnostics at spans, each with a
    hint, in well under a second."""
    start = time.perf_counter()
    with pytest.raises(specc.SpecError) as info:
        specc.loads(text, "huge.spec")
    took = time.perf_counter() - start
    assert took < QUICK, f"checking took {took:.2f} s"
    diags = info.value.diagnostics
    assert diags
    for d in diags:
        assert d.span is not None and d.line >= 1 and d.column >= 1, d.render()
        assert d.hint, d.render()
    rendered = str(info.value)
    assert "Traceback" not in rendered
    return diags


def test_every_numeric_argument_is_covered():
    covered = {(kind, arg) for kind, arg, _, _ in POSITIONS}
    for kind in ("Dense", "Conv2D", "ConvTranspose2D", "MaxPool", "Embedding", "Reshape", "LSTM", "GRU"):
        for arg in LAYERS[kind].args:
            if arg.type in ("int", "pair", "padding", "dims"):
                assert (kind, arg.name) in covered


@pytest.mark.parametrize("text", [text for _, text in CASES], ids=[name for name, _ in CASES])
def test_a_huge_number_in_any_argument_is_a_diagnostic(text):
    diags = check_fails_quickly(text)
    assert diags[0].line == 3  # at the layer's line: the argument or the call


@pytest.mark.parametrize("text,message", [
    # the issue's six lines: the residual hint tried every stride up to the input's size
    ("model a {\n    input [4, 28, 28]\n    Conv2D(4, kernel=3, padding=99999999999999999999)\n"
     "    residual { Conv2D(4, kernel=1, padding=1) }\n}\n", "padding must be at most 2,147,483,647"),
    ("model a {\n    input [4, 28, 28]\n    Conv2D(4, kernel=3, padding=2**30)\n"
     "    residual { Conv2D(4, kernel=1, padding=1) }\n}\n", "Conv2D would output [4, 2147483674, 2147483674]"),
    # input dimensions, one too large or together too many values
    ("model a {\n    input [99999999999999999999]\n    Dense(2)\n}\n", "input [99999999999999999999] holds"),
    ("model a {\n    input [2**31]\n    Dense(2)\n}\n", "more than specc's limit"),
    ("model a {\n    input [3, 65536, 65536]\n    Flatten()\n}\n", "holds 12,884,901,888 values per sample"),
    # a repeat count: bounded by the unrolled-statement limit before any unrolling
    ("model a {\n    input [4]\n    repeat 99999999999999999999 { ReLU() }\n}\n", "unrolls to more than 50,000"),
    ("model a {\n    input [4]\n    repeat 2**62 { repeat 2**62 { ReLU() } }\n}\n", "unrolls to more than 50,000"),
    # results: a pool, a transposed convolution, a concat, a weight array, the total
    ("model a {\n    input [1, 8, 8]\n    MaxPool(2**31 - 1, stride=1, padding=2**31 - 2)\n}\n",
     "MaxPool would output"),
    ("model a {\n    input [1, 8, 8]\n    ConvTranspose2D(1, kernel=1, stride=2**30)\n}\n",
     "ConvTranspose2D would output"),
    ("model a {\n    input [1, 32768, 32768]\n    concat { branch { } branch { } branch { } }\n}\n",
     "concat would output [3, 32768, 32768]"),
    ("model a {\n    input [65536]\n    Dense(65536)\n}\n", "Dense's kernel [65536, 65536] would hold"),
    ("model a {\n    input [8] int\n    Embedding(2**31 - 1, 2)\n}\n", "Embedding's embeddings [2147483647, 2]"),
    ("model a {\n    input [5, 4]\n    LSTM(2**29)\n}\n", "LSTM's kernel [4, 2147483648]"),
    ("model a {\n    input [4]\n    Dense(2**31 - 1)\n}\n", "Dense's kernel [4, 2147483647]"),
    ("model wide {\n    input [40000]\n    Dense(40000)\n    Dense(40000)\n}\n",
     "model 'wide' has 3,200,080,000 parameters"),
    ("model a {\n    input [2]\n    Reshape([99999999999999999999, -1])\n}\n", "shape must be at most"),
    ("model a {\n    input [12]\n    Reshape([2**20, 2**20, -1])\n}\n", "shape must be at most|cannot reshape"),
    # block arguments reach the layer they size
    ("block b(n) {\n    Dense(n)\n}\nmodel a {\n    input [4]\n    b(99999999999999999999)\n}\n",
     "units must be at most"),
    # train-block counts that size arrays: synthetic data, a GAN's latent vector
    ("model a {\n    input [4]\n    Dense(3, activation=softmax)\n}\ntrain a {\n"
     "    data = synthetic(samples=99999999999999999999)\n    loss = cross_entropy\n}\n", "samples must be at most"),
    ("model a {\n    input [4]\n    Dense(3, activation=softmax)\n}\ntrain a {\n"
     "    data = synthetic(classes=2**40)\n    loss = cross_entropy\n}\n", "classes must be at most"),
])
def test_absurd_sizes_are_diagnostics(text, message):
    import re

    diags = check_fails_quickly(text)
    assert any(re.search(message.replace("[", r"\[").replace("]", r"\]").replace("*", r"\*")
                         .replace("(", r"\(").replace(")", r"\)"), d.message) for d in diags), \
        [d.render() for d in diags]


def test_the_largest_sizes_still_check():
    """The limit is a limit, not a guess: sizes at it pass."""
    program = specc.loads(f"model a {{\n    input [{MAX_SIZE}]\n    Dense(1, bias=false)\n}}\n")
    assert program["a"].params == MAX_SIZE
    program = specc.loads("model a {\n    input [4, 28, 28]\n    Conv2D(4, kernel=3, padding=10000)\n"
                          "    Conv2D(4, kernel=1, stride=2**31 - 1)\n}\n")
    assert program["a"].output_shape == (4, 1, 1)


@pytest.mark.parametrize("padding,stride", [(10000, 7), (11000, 3), (1, 1)])
def test_the_residual_hint_is_arithmetic(padding, stride):
    """The shortcut hint's stride for a large input is found at once, and right."""
    text = (f"model a {{\n    input [1, 28, 28]\n    Conv2D(4, kernel=3, padding={padding})\n"
            f"    residual {{ Conv2D(8, kernel=1, stride={stride}) }}\n}}\n")
    (d,) = check_fails_quickly(text)
    assert f"Conv2D(8, kernel=1, stride={stride}) }}" in d.hint if stride > 1 else "Conv2D(8, kernel=1) }" in d.hint


def test_the_issue_spec_through_the_cli(tmp_path, capsys):
    """`specc check` and `specc train`: exit 1, file:line:col, the source line, a caret and a hint."""
    spec = tmp_path / "a.spec"
    spec.write_text("model a {\n    input [4]\n    Dense(99999999999999999999, activation=softmax)\n}\n"
                    "train a {\n    data = synthetic(samples=64, classes=3)\n    loss = cross_entropy\n}\n")
    for command in (["check", str(spec)], ["summary", str(spec)], ["ir", str(spec)],
                    ["train", str(spec), "--backend", "torch", "--quiet", "--out", str(tmp_path / "run")]):
        start = time.perf_counter()
        status = cli.main(command)
        err = capsys.readouterr().err
        assert time.perf_counter() - start < 5 * QUICK
        assert status == 1, err
        assert err.splitlines()[:4] == [
            f"{spec}:3:11: error: Dense: units must be at most 2,147,483,647 (2**31 - 1), got 99999999999999999999",
            "    Dense(99999999999999999999, activation=softmax)",
            "          ^~~~~~~~~~~~~~~~~~~~",
            "hint: no backend holds a size this large; check the number (and the expression that makes it)",
        ], err
        assert "internal error" not in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


ISSUE_SPEC = """model a {
    input [4, 28, 28]
    Conv2D(4, kernel=3, padding=99999999999999999999)
    residual { Conv2D(4, kernel=1, padding=1) }
}
"""


@pytest.mark.parametrize("padding", ["99999999999999999999", "2**30", "2**31 - 1"])
def test_the_issue_spec_ends_in_a_diagnostic_not_a_hang(tmp_path, padding):
    """In its own process with a time limit: before the fix, `specc check` of
    this spec searched ~10**20 strides for the residual's hint."""
    import subprocess

    spec = tmp_path / "a.spec"
    spec.write_text(ISSUE_SPEC.replace("99999999999999999999", padding))
    done = subprocess.run([sys.executable, "-m", "specc", "check", str(spec)], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 1, done.stderr
    assert done.stderr.startswith(f"{spec}:3:"), done.stderr
    assert "\nhint: " in done.stderr and "Traceback" not in done.stderr


def test_the_front_end_never_imports_a_framework():
    import subprocess

    code = ("import sys, specc\n"
            "try:\n    specc.loads('model a {\\n    input [4]\\n    Dense(2**40)\\n}\\n')\n"
            "except specc.SpecError:\n    pass\n"
            "assert not {'jax', 'torch'} & set(sys.modules), sorted({'jax', 'torch'} & set(sys.modules))\n")
    subprocess.run([sys.executable, "-c", code], check=True)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(position=st.sampled_from(POSITIONS),
       value=st.one_of(st.integers(MAX_SIZE + 1, 10**40), st.integers(10**300, 10**320)))
def test_any_huge_integer_anywhere_is_refused_quickly(position, value):
    kind, arg, kind_of, text = position
    if kind_of in FLOAT_TYPES and value < 10**39:
        value = 10**39 + value  # beyond float32, as a number argument must be to be refused
    check_fails_quickly(text.replace("{}", str(value)))
