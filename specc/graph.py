"""Model bodies to graph nodes: layers, block calls, `residual`, `concat` and
`repeat`, unrolled into one list of IR nodes in topological order, with
Keras-style names and every shape inferred.

Naming. A model and each block call are naming scopes. Unnamed layers in a
scope are named as Keras names them, `<snake>_<n>` with one counter per kind
(conv2d_1, conv2d_2), going around names the user wrote anywhere in the
scope. A block call is named the same way after its block (`basic_1`), or by
the user (`stage2: basic(32)`), and the nodes of its body get that name as a
prefix: `basic_1/conv2d_1`, `stage_1/basic_2/conv2d_1`. `repeat N { ... }`
writes its body N times into the enclosing scope, so repeated layers continue
its counters (conv2d_1, conv2d_2) and repeated calls get fresh names (basic_1,
basic_2). The merge nodes are `add_<n>` (residual) and `concat_<n>` (concat).

Errors. A wrong layer leaves the shape after it unknown (None): later layers
are still bound and checked, but no later shape is guessed and the model is
not built.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import ast
from .binding import Binder, argument_span, layer_signature
from .blocks import BlockTable
from .catalogue import LAYERS, LayerError, _describe, size_problem
from .constants import Scope
from .diagnostics import Reported, Span
from .ir import INPUT, Layer, Shape
from .merges import MergeChecks
from .naming import Names, unknown_call

MAX_STATEMENTS = 50_000  # unrolled statements per model: `repeat 10**9 { }` must not hang
MAX_CALL_DEPTH = 64


class _Abandon(Exception):
    """The model is too large to unroll; reported, stop building it."""


@dataclass(frozen=True)
class Value:
    """What the next statement reads: a node's output (None: unknown after an error)."""

    node: str
    shape: Shape | None
    source: str  # how a message names it: "the model input is", "conv2d_1 outputs"


@dataclass(frozen=True)
class Context:
    scope: Scope  # the constants (and a block call's arguments) visible
    names: Names
    calls: tuple[str, ...] = ()  # the blocks being called, outermost first


class GraphBuilder:
    """Builds one model's nodes; `nodes` is in topological order."""

    def __init__(self, binder: Binder, blocks: BlockTable, dtype: str):
        self.binder, self.blocks, self.dtype = binder, blocks, dtype
        self.out = binder.out
        self.nodes: list[Layer] = []
        self.work = 0
        self.failed = False
        self.merges = MergeChecks(self)

    def run(self, body: tuple, x: Value, ctx: Context) -> Value | None:
        try:
            return self.body(body, x, ctx)
        except _Abandon:
            return None

    def body(self, stmts: tuple, x: Value, ctx: Context) -> Value:
        for s in stmts:
            x = self.statement(s, x, ctx)
        return x

    def statement(self, s, x: Value, ctx: Context) -> Value:
        self.work += 1
        self.check_size(self.work, s.span)
        if isinstance(s, ast.LayerStmt):
            return self.layer_stmt(s, x, ctx)
        if isinstance(s, ast.Residual):
            return self.merges.residual(s, x, ctx)
        if isinstance(s, ast.Concat):
            return self.merges.concat(s, x, ctx)
        if isinstance(s, ast.Repeat):
            return self.repeat(s, x, ctx)
        if ctx.calls:  # an input line in a block body (also reported where the block is defined)
            self.out.error("a block has no input line", s.span,
                           "a block reads what comes before its call; the model's input line says the shape")
        else:
            self.out.error("input must be the first line of a model", s.span, "move `input [...]` above the first layer")
        return self.unknown(x)

    def check_size(self, statements: int, span: Span) -> None:
        """Abandon a model that would unroll to more than MAX_STATEMENTS statements."""
        if statements > MAX_STATEMENTS:
            self.out.error(f"this model unrolls to more than {MAX_STATEMENTS:,} layers", span,
                           "use smaller repeat counts")
            raise _Abandon

    def unknown(self, x: Value) -> Value:
        """x with its shape unknown: something before went wrong, and the
        model will not be built (every failure passes through here)."""
        self.failed = True
        return Value(x.node, None, x.source)

    # ------------------------------------------------------------ layers

    def layer_stmt(self, s: ast.LayerStmt, x: Value, ctx: Context) -> Value:
        name = s.call.name
        if name in self.blocks:
            return self.block_call(s, x, ctx)
        d = LAYERS.get(name)
        if d is None or d.merge:
            unknown_call(s.call, self.blocks, self.out)
            return self.unknown(x)
        node = ctx.names.user(s, self.out) if s.name else ctx.names.auto(d.snake)
        args = self.binder.bind(layer_signature(d), s.call.args, s.call.span, ctx.scope)
        if not self.embedding_fits(d.kind, x, s.call.span):
            return self.unknown(x)
        if args is None or x.shape is None or node is None:
            return self.unknown(x)
        try:
            attrs, out, weights = d.build(args, x.shape, x.source)
        except LayerError as err:
            self.out.error(err.message, argument_span(s.call, layer_signature(d), err.arg), err.hint)
            return self.unknown(x)
        too_large = size_problem(d.kind, out, weights)
        if too_large is not None:
            self.out.error(too_large.message, s.call.span, too_large.hint)
            return self.unknown(x)
        return self.add(Layer(node, d.kind, attrs, x.shape, out, tuple(weights), s.span.line, (x.node,),
                              (x.shape,), s.span.file, s.span.column))

    def embedding_fits(self, kind: str, x: Value, span: Span) -> bool:
        """Token ids go into Embedding, and only there, first."""
        if kind == "Embedding" and (x.node != INPUT or self.dtype != "int32"):
            self.out.error("Embedding must be the first layer of a model with `input [T] int`", span,
                           "write `input [T] int` (token ids) and put Embedding right after it")
            return False
        if x.node == INPUT and self.dtype == "int32" and kind != "Embedding":
            self.out.error(f"a model with integer input must start with Embedding, not {kind}", span,
                           "token ids are looked up with Embedding(vocab, dim) first")
            return False
        return True

    def add(self, node: Layer) -> Value:
        self.nodes.append(node)
        return Value(node.name, node.output_shape, f"{node.name} outputs")

    # ------------------------------------------------------------ blocks and repeat

    def block_call(self, s: ast.LayerStmt, x: Value, ctx: Context) -> Value:
        block = self.blocks[s.call.name]
        call = ctx.names.user(s, self.out) if s.name else ctx.names.auto(block.name)
        if block.broken:  # its parameter list is what is wrong, reported at the definition
            return self.unknown(x)
        args = self.binder.bind(block.signature, s.call.args, s.call.span, ctx.scope)
        if block.name in ctx.calls:  # a cycle, reported with the block definitions
            return self.unknown(x)
        if len(ctx.calls) >= MAX_CALL_DEPTH:
            self.out.error(f"block calls nest more than {MAX_CALL_DEPTH} deep", s.call.span,
                           "flatten the blocks, or use repeat")
            return self.unknown(x)
        if args is None or call is None:
            return self.unknown(x)
        inner = Context(block.scope.with_values(args), Names(call + "/", block.user_names),
                        ctx.calls + (block.name,))
        saved = self.out.context
        self.out.context = f"in {call}, called at {s.span.file}:{s.span.line}"
        try:
            return self.body(block.node.body, x, inner)
        finally:
            self.out.context = saved

    def repeat(self, s: ast.Repeat, x: Value, ctx: Context) -> Value:
        try:
            count = self.binder.evaluator.eval(s.count, ctx.scope)
        except Reported:
            return self.body(s.body, self.unknown(x), ctx)  # still check the body once
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            self.out.error(f"repeat needs a whole number of times, at least 1, got {_describe(count)}",
                           s.count.span, "repeat N { ... } writes its body N times")
            return self.body(s.body, self.unknown(x), ctx)
        if not s.body:
            return x
        # At least this much unrolling is ahead (a block call counts once):
        # refuse a count far too large before spending time on it.
        self.check_size(self.work + count * _size(s.body), s.count.span)
        for _ in range(count):
            x = self.body(s.body, x, ctx)
        return x


def _size(body: tuple) -> int:
    """Statements in a body, nested ones included, block calls counted once."""
    total = 0
    for s in body:
        total += 1
        if isinstance(s, ast.Residual):
            total += _size(s.body) + _size(s.shortcut or ())
        elif isinstance(s, ast.Repeat):
            total += _size(s.body)
        elif isinstance(s, ast.Concat):
            total += sum(_size(b.body) for b in s.branches)
    return total
