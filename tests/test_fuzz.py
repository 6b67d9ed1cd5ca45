"""Property tests: whatever text or bytes come in, the front end returns a
Program or raises specc.SpecError (with positioned, renderable diagnostics);
never another exception, never a hang.

Inputs: random bytes, random text built from the language's own alphabet
and words (version 2's keywords included), mutations of the seed specs
(character deletions, insertions and swaps, duplicated tokens, deleted
lines), graph specs (blocks, repeat, residual, concat, import) among them,
and random nestings of the graph forms.
"""

from __future__ import annotations

import re
from math import prod
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import specc
from specc.check import check_text
from specc.ir import Program

REPO = Path(__file__).resolve().parent.parent
SEEDS = [p.read_text(encoding="utf-8") for p in sorted((REPO / "specs").glob("*.spec"))]
SEEDS += [p.read_text(encoding="utf-8") for p in sorted((REPO / "tests" / "specs").glob("*.spec"))]
SEEDS += [p.read_text(encoding="utf-8") for p in sorted((REPO / "tests" / "specs" / "graphs").glob("*.spec"))]

FUZZ = settings(max_examples=150, deadline=10000,  # a hang, not a loaded machine
                suppress_health_check=[HealthCheck.too_slow])

# Characters and words a spec is made of, so random text gets past the lexer often.
ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_ \t\n()[]{},;:=+-*/%.#\"'\\@$é\x00\r"
WORDS = ["model", "train", "let", "input", "int", "block", "residual", "import", "Dense", "Conv2D", "ConvTranspose2D",
         "MaxPool", "AvgPool", "GlobalAvgPool", "BatchNorm", "LSTM", "GRU", "Embedding", "Flatten", "Reshape",
         "Dropout", "ReLU", "LeakyReLU", "Softmax", "activation=", "padding=", "same", "valid", "stride=",
         "kernel=", "return_sequences=", "true", "false", "data", "loss", "optimizer", "mnist", "adam(lr=1e-3)",
         "cross_entropy", "metrics", "[accuracy]", "batch", "epochs", "seed", "-1", "0", "1", "2", "3", "28", "7",
         "0.5", "1e9", "**", "//", "(", ")", "[", "]", "{", "}", ",", "\n", ";", " ", "m", "x", ":",
         "repeat", "repeat 2 {", "concat", "concat(axis=0) {", "branch", "branch {", "shortcut", "} shortcut {",
         "residual {", "block b(f, s=1) {", "b(", "b(4)", "basic_1", "import", '"graph_lib.spec"', '"fuzz.spec"',
         "Add()", "Concat(0)", "axis=", "-1"]
TOKEN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|\d+(?:\.\d*)?(?:[eE][+-]?\d+)?|//|\*\*|\S")


# Keras's parameter formulas per layer kind, written out here (not read from
# the IR's weight lists): (total, trainable) from the layer's input shape and
# attributes. Kinds without weights count 0; a new weighted kind must be added.
WEIGHTLESS = {"MaxPool", "AvgPool", "GlobalAvgPool", "Flatten", "Reshape", "Dropout", "ReLU", "Sigmoid", "Tanh",
              "Softmax", "GELU", "ELU", "SiLU", "LeakyReLU", "Add", "Concat"}
INIT_WEIGHTS_UP_TO = 2_000_000  # canonical arrays only for seed models this small (resnet50 has 25.6M)


def keras_counts(layer) -> tuple[int, int]:
    a, shape = layer.attrs, layer.input_shape
    if layer.kind == "Dense":
        n = shape[-1] * a["units"] + a["units"] * a["bias"]
    elif layer.kind in ("Conv2D", "ConvTranspose2D"):
        kh, kw = a["kernel"]
        n = kh * kw * shape[0] * a["filters"] + a["filters"] * a["bias"]
    elif layer.kind == "BatchNorm":  # gamma, beta trainable; moving mean and variance not
        c = shape[-1] if len(shape) == 2 else shape[0]
        return 4 * c, 2 * c
    elif layer.kind == "LSTM":
        u = a["units"]
        n = 4 * (u * (shape[-1] + u) + u)
    elif layer.kind == "GRU":  # reset_after: two bias vectors
        u = a["units"]
        n = 3 * (u * (shape[-1] + u) + 2 * u)
    elif layer.kind == "Embedding":
        n = a["vocab"] * a["dim"]
    else:
        assert layer.kind in WEIGHTLESS, f"no parameter formula for {layer.kind}: add one to keras_counts"
        n = 0
    return n, n


def check_counts(model, make_arrays: bool = False) -> None:
    """The report's totals against the formulas; with `make_arrays`, against
    the canonical arrays too (slow for big models: only for the seed specs)."""
    report = specc.summary(model)
    counts = [keras_counts(layer) for layer in model.layers]
    assert [(row.params, row.trainable) for row in report.rows] == counts
    total, trainable = sum(c[0] for c in counts), sum(c[1] for c in counts)
    assert (report.total, report.trainable, report.non_trainable) == (total, trainable, total - trainable)
    assert model.params == total
    assert report.param_bytes == 4 * total
    # one entry per weight key (a name given twice would collapse two entries into one)
    assert sum(prod(spec.shape) for spec in model.weight_specs().values()) == total
    if make_arrays and total <= INIT_WEIGHTS_UP_TO:
        weights = specc.init_weights(model)
        assert sum(w.size for w in weights.values()) == total
        assert all(w.dtype == np.float32 for w in weights.values())
        prefixes = {key.rsplit("/", 1)[0] for key in weights}  # "<layer>/<param>"; a layer name may hold "/"
        assert prefixes == {layer.name for layer, c in zip(model.layers, counts) if c[0]}


def outcome(source) -> Program | specc.SpecError:
    """Run the front end; only a Program or a SpecError may come back."""
    try:
        result = check_text(source, "fuzz.spec") if isinstance(source, bytes) else specc.loads(source, "fuzz.spec")
    except specc.SpecError as err:
        assert err.diagnostics, "a SpecError must carry at least one diagnostic"
        rendered = str(err)
        assert rendered == err.render()
        for d in err.diagnostics:
            assert isinstance(d.message, str) and d.message
            if d.span is not None:
                assert d.file == "fuzz.spec" or Path(d.file).is_file()  # or a file it imported
                assert d.line >= 1 and d.column >= 1
                assert f"{d.file}:{d.line}:{d.column}: error: {d.message}" in rendered
            if d.hint:
                assert f"hint: {d.hint}" in rendered
        return err
    assert isinstance(result, Program)
    # What checks must also report and serialise.
    assert Program.from_json(result.to_json()) == result
    for model in result:
        check_counts(model)
        report = specc.summary(model)
        table = str(report)
        assert f"Total params: {report.total:,}" in table
        assert report.to_dict()["total_params"] == report.total
    return result


@FUZZ
@given(st.binary(max_size=300))
def test_random_bytes(data):
    outcome(data)


@FUZZ
@given(st.text(alphabet=ALPHABET, max_size=300))
def test_random_text(text):
    outcome(text)


@FUZZ
@given(st.lists(st.sampled_from(WORDS), max_size=80))
def test_random_token_soup(words):
    outcome(" ".join(words))


@st.composite
def mutated_seed(draw):
    text = draw(st.sampled_from(SEEDS))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["delete", "insert", "swap", "duplicate_token", "delete_line", "replace_token"]))
        if op in ("delete", "insert", "swap") and len(text) > 1:
            i = draw(st.integers(0, len(text) - 2))
            if op == "delete":
                text = text[:i] + text[i + 1:]
            elif op == "insert":
                text = text[:i] + draw(st.sampled_from(ALPHABET)) + text[i:]
            else:
                text = text[:i] + text[i + 1] + text[i] + text[i + 2:]
        elif op in ("duplicate_token", "replace_token"):
            tokens = list(TOKEN.finditer(text))
            if tokens:
                m = draw(st.sampled_from(tokens))
                new = m.group() * 2 if op == "duplicate_token" else draw(st.sampled_from(WORDS))
                text = text[:m.start()] + new + text[m.end():]
        elif op == "delete_line":
            lines = text.split("\n")
            del lines[draw(st.integers(0, len(lines) - 1))]
            text = "\n".join(lines)
    return text


@FUZZ
@given(mutated_seed())
def test_mutated_seed_specs(text):
    outcome(text)


@FUZZ
@given(mutated_seed())
def test_mutated_seed_specs_as_bytes(text):
    outcome(text.encode("utf-8"))


@settings(max_examples=40, deadline=None)  # deep recursion is slow but bounded
@given(st.sampled_from(["(", "[", "-", "+"]), st.integers(1, 3000))
def test_deep_nesting(opener, depth):
    closer = {"(": ")", "[": "]"}.get(opener, "")
    outcome(f"let x = {opener * depth}1{closer * depth}\n")


@settings(max_examples=40, deadline=None)  # deep recursion is slow but bounded
@given(st.sampled_from(["+", "*", "**", "-", "//"]), st.integers(1, 3000))
def test_long_operator_chains(op, length):
    outcome("let x = " + op.join(["2"] * length) + "\n")


@settings(max_examples=30, deadline=3000)
@given(st.integers(-3, 10**30), st.integers(-3, 10**30))
def test_huge_and_odd_numbers_in_layers(a, b):
    outcome(f"model m {{\n    input [{a}, 4, 4]\n    Conv2D({b}, kernel=3, padding=same)\n    Flatten()\n"
            f"    Dense({b})\n}}\n")


FORMS = ["residual {{ {} }}", "residual {{ {} }} shortcut {{ {} }}", "repeat {n} {{ {} }}",
         "concat {{ branch {{ {} }} branch {{ {} }} }}", "concat(axis={a}) {{ branch {{ {} }} branch {{ }} }}",
         "g({n})"]
LEAVES = ["Dense(4)", "Dense(3)", "ReLU()", "Dropout(0.1)", "", "g(2)", "Dense(n)", "BatchNorm()"]


@st.composite
def nested_graph(draw, depth=0):
    """A random nesting of residual, shortcut, repeat, concat and block calls."""
    if depth > 3 or draw(st.booleans()):
        return draw(st.sampled_from(LEAVES))
    form = draw(st.sampled_from(FORMS))
    parts = [draw(nested_graph(depth + 1)) for _ in range(form.count("{}"))]
    return form.format(*parts, n=draw(st.integers(-1, 3)), a=draw(st.integers(-2, 1)))


@FUZZ
@given(st.lists(nested_graph(), min_size=1, max_size=4), st.sampled_from(["[4]", "[2, 4]", "[3, 4, 4]"]))
def test_random_graphs(statements, input_shape):
    body = "\n    ".join(statements)
    outcome(f"block g(n) {{\n    Dense(n)\n}}\nmodel m {{\n    input {input_shape}\n    {body}\n}}\n")


def test_seeds_are_valid_and_counted_by_the_formulas():
    """Every seed spec unmutated: a Program, and the count checks of `outcome`
    (so they run on every layer kind every time, not only when hypothesis draws it)."""
    kinds = set()
    for path in sorted(REPO.glob("specs/*.spec")) + sorted(REPO.glob("tests/specs/**/*.spec")):
        program = specc.load(path)
        assert isinstance(program, Program), path
        for model in program:
            check_counts(model, make_arrays=True)
            kinds |= {layer.kind for layer in model.layers}
    assert {"Dense", "Conv2D", "ConvTranspose2D", "BatchNorm", "LSTM", "GRU", "Embedding"} <= kinds
