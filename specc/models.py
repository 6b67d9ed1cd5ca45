"""One `model NAME { ... }` to an IR Model: its input line, then its body
through the graph builder (specc.graph)."""

from __future__ import annotations

from . import ast
from .binding import Binder
from .blocks import BlockTable, user_names
from math import prod

from .catalogue import MAX_SIZE, MAX_SIZE_TEXT, Symbol, _describe, _shape_str
from .constants import Scope
from .diagnostics import Reported
from .graph import Context, GraphBuilder, Value
from .ir import INPUT, Model
from .naming import Names


def build_model(m: ast.ModelDef, scope: Scope, binder: Binder, blocks: BlockTable) -> Model | None:
    """The checked model, or None when anything in it was wrong (reported)."""
    out = binder.out
    before = out.count
    inputs = [s for s in m.body if isinstance(s, ast.Input)]
    if not inputs:
        out.error(f"model '{m.name}' has no input line", m.name_span,
                  "start the body with the shape of one sample, e.g. `input [1, 28, 28]`")
        return None
    for extra in inputs[1:]:
        out.error(f"model '{m.name}' has more than one input line", extra.span,
                  "a model has exactly one input, written first")
    if m.body[0] is not inputs[0]:
        out.error("input must be the first line of a model", inputs[0].span, "move `input [...]` above the first layer")
    shape, dtype = _input(inputs[0], scope, binder)
    graph = GraphBuilder(binder, blocks, dtype)
    names = Names("", frozenset(user_names(m.body, out)))
    x = Value(INPUT, shape, "the model input is")
    stmts = tuple(s for s in m.body if not isinstance(s, ast.Input))
    result = graph.run(stmts, x, Context(scope, names))
    if result is None or graph.failed or shape is None or out.count != before:
        return None
    params = sum(layer.params for layer in graph.nodes)
    if params > MAX_SIZE:
        out.error(f"model '{m.name}' has {params:,} parameters, more than specc's limit of {MAX_SIZE_TEXT}",
                  m.name_span, "no backend trains this many: with Adam, 2**31 float32 parameters need 32 GiB of "
                               "weights, gradients and slots; use fewer units or filters")
        return None
    return Model(m.name, shape, tuple(graph.nodes), dtype)


def _input(s: ast.Input, scope: Scope, binder: Binder) -> tuple[tuple[int, ...] | None, str]:
    out = binder.out
    dtype = "float32"
    if s.dtype is not None:
        if s.dtype in ("int", "float"):
            dtype = "int32" if s.dtype == "int" else "float32"
        else:
            out.error(f"unknown input type '{s.dtype}'", s.dtype_span,
                      "write `input [T] int` for token ids; inputs are float otherwise")
    try:
        dims = binder.evaluator.eval(s.shape, scope)
    except Reported:
        return None, dtype
    if not dims or any(isinstance(d, bool) or not isinstance(d, int) or d <= 0 for d in dims):
        hint = ("the batch axis is implicit: write the shape of one sample, e.g. [1, 28, 28]"
                if any(isinstance(d, Symbol) or d == -1 or d is None for d in dims) or not dims
                else "dimensions are positive integers, channels first: [C, H, W], [T, F] or [F]")
        out.error(f"input shape must be positive integers, got {_describe(list(dims))}", s.shape.span, hint)
        return None, dtype
    if prod(dims) > MAX_SIZE:
        out.error(f"input {_shape_str(dims)} holds {prod(dims):,} values per sample, more than specc's limit of "
                  f"{MAX_SIZE_TEXT}", s.shape.span, "no backend holds a sample this large; check the dimensions")
        return None, dtype
    return tuple(dims), dtype
