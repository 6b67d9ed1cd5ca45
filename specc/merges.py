"""`residual { } shortcut { }` and `concat(axis) { branch { } ... }`: the
statements that fork the graph and join it again with a merge node (Add,
Concat), and the shape diagnostics that name both sides.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import ast
from .binding import Signature, argument_span
from .catalogue import LAYERS, LayerError, _shape_str, size_problem
from .ir import INPUT, Layer, Shape

if TYPE_CHECKING:
    from .graph import Context, GraphBuilder, Value

CONCAT_SIGNATURE = Signature("concat", LAYERS["Concat"].args)


class MergeChecks:
    def __init__(self, graph: "GraphBuilder"):
        self.graph = graph
        self.out = graph.out

    def residual(self, s: ast.Residual, x: "Value", ctx: "Context") -> "Value":
        """y = Add(body(x), shortcut(x)); the shortcut is x itself when absent."""
        body = self.graph.body(s.body, x, ctx)
        shortcut = self.graph.body(s.shortcut, x, ctx) if s.shortcut is not None else x
        name = ctx.names.auto("add")
        if body.shape is None or shortcut.shape is None:
            return self.graph.unknown(x)
        if body.shape != shortcut.shape:
            self.mismatch(s, x.shape, body.shape, shortcut.shape)
            return self.graph.unknown(x)
        return self.merge(name, "Add", {}, (body, shortcut), s.keyword)

    def mismatch(self, s: ast.Residual, x: Shape, body: Shape, shortcut: Shape) -> None:
        example = _projection(x, body)
        if s.shortcut is None:
            self.out.error(f"residual body gives {_shape_str(body)}, but the identity shortcut gives its input "
                           f"{_shape_str(shortcut)}", s.keyword,
                           f"add a shortcut that gives {_shape_str(body)}: `{example}`" if example
                           else f"add a shortcut {{ ... }} that gives {_shape_str(body)}")
        else:
            self.out.error(f"residual body gives {_shape_str(body)}, but its shortcut gives {_shape_str(shortcut)}",
                           s.keyword, f"make the shortcut give {_shape_str(body)}" + (f", e.g. `{example}`"
                                                                                      if example else ""))

    def concat(self, s: ast.Concat, x: "Value", ctx: "Context") -> "Value":
        """Every branch reads x; their outputs are joined along `axis`."""
        call = ast.CallExpr("concat", s.args, s.span, s.keyword)
        args = self.graph.binder.bind(CONCAT_SIGNATURE, s.args, s.keyword, ctx.scope)
        outs = [self.graph.body(b.body, x, ctx) for b in s.branches]
        name = ctx.names.auto("concat")
        if len(s.branches) < 2:
            self.out.error(f"concat needs at least two branches, got {len(s.branches)}", s.keyword,
                           "write concat { branch { ... } branch { ... } }; an empty branch passes its input on")
            return self.graph.unknown(x)
        if args is None or any(o.shape is None for o in outs):
            return self.graph.unknown(x)
        shapes = tuple(o.shape for o in outs)
        if not self.branches_agree(s, shapes, args["axis"]):
            return self.graph.unknown(x)
        try:
            attrs, _, _ = LAYERS["Concat"].build(args, shapes, x.source)
        except LayerError as err:  # the axis is out of range
            self.out.error(err.message, argument_span(call, CONCAT_SIGNATURE, err.arg), err.hint)
            return self.graph.unknown(x)
        return self.merge(name, "Concat", attrs, tuple(outs), s.keyword)

    def branches_agree(self, s: ast.Concat, shapes: tuple[Shape, ...], axis: int) -> bool:
        """Every branch's shape equals the first's on every axis but the joined one."""
        rank = len(shapes[0])
        joined = axis + rank if axis < 0 else axis
        for i, shape in enumerate(shapes[1:], start=2):
            if len(shape) == rank and (not 0 <= joined < rank or _rest(shape, joined) == _rest(shapes[0], joined)):
                continue
            where = f"on every axis but {joined}" if 0 <= joined < rank else "in rank"
            self.out.error(f"concat branches must agree {where}: branch 1 gives {_shape_str(shapes[0])}, "
                           f"branch {i} gives {_shape_str(shape)}", s.keyword,
                           f"only axis {joined} is joined; give every branch the same other dimensions "
                           "(e.g. padding=same and the same strides)" if 0 <= joined < rank
                           else "every branch must give the same number of axes")
            return False
        return True

    def merge(self, name: str, kind: str, attrs: dict, inputs: tuple, span) -> "Value":
        reads_input = next((v for v in inputs if v.node == INPUT), None)
        if reads_input is not None and not self.graph.embedding_fits(kind, reads_input, span):
            return self.graph.unknown(inputs[0])
        d = LAYERS[kind]
        shapes = tuple(v.shape for v in inputs)
        attrs, out, weights = d.build(attrs if kind == "Concat" else {}, shapes, inputs[0].source)
        too_large = size_problem("concat" if kind == "Concat" else "residual", out, weights)
        if too_large is not None:
            self.out.error(too_large.message, span, too_large.hint)
            return self.graph.unknown(inputs[0])
        return self.graph.add(Layer(name, kind, attrs, shapes[0], out, tuple(weights), span.line,
                                    tuple(v.node for v in inputs), shapes, span.file, span.column))


def _rest(shape: Shape, axis: int) -> Shape:
    return shape[:axis] + shape[axis + 1:]


def _projection(x: Shape | None, target: Shape) -> str | None:
    """A shortcut that maps shape x to target: a 1x1 convolution with the
    stride that gives target's size, or a Dense layer."""
    if x is None:
        return None
    if len(x) == 3 and len(target) == 3:
        strides = [_stride_to(n, m) for n, m in zip(x[1:], target[1:])]
        if None in strides:
            return None
        stride = strides[0] if strides[0] == strides[1] else list(strides)
        extra = f", stride={stride}" if stride != 1 else ""
        return f"shortcut {{ Conv2D({target[0]}, kernel=1{extra}) }}"
    if len(x) == 1 and len(target) == 1:
        return f"shortcut {{ Dense({target[0]}) }}"
    return None


def _stride_to(n: int, m: int) -> int | None:
    """The smallest stride s with ceil(n / s) == m (what a 1x1 convolution
    of stride s makes of size n), or None. Arithmetic, not a search: sizes
    may be huge, and the checker's work must not grow with them.
    ceil(n / s) <= m exactly when s >= ceil(n / m), so that is the one candidate."""
    if n < 1 or m < 1:
        return None
    s = -(-n // m)
    return s if -(-n // s) == m else None
