"""Constants and arithmetic: `let` definitions, the scope they live in, and
the evaluation of expressions to values.

A bare word is, in this order: a constant in scope; a constant whose `let`
failed (already reported, so silently abandoned); a word the language knows
(an activation, a padding, a loss, an optimizer, ...), which stays a
`Symbol` for the argument binder to check; a Symbol wherever the argument is
symbolic (`activation=rellu` is then reported as an unknown activation);
otherwise an unknown name, with the closest known one as a hint.
"""

from __future__ import annotations

import math
from collections import ChainMap
from typing import Any, Mapping

from . import ast, options
from .catalogue import ACTIVATIONS, Symbol, _describe
from .diagnostics import Collector, Reported, Span, did_you_mean

MAX_INT = 2**62

KNOWN_WORDS = frozenset(
    ACTIVATIONS + ("valid", "same") + options.LOSSES + options.METRICS
    + tuple(options.OPTIMIZERS) + tuple(options.DATASETS) + tuple(options.SCHEDULES)
)


class Scope:
    """The constants visible at one point: their values, where each was
    defined, and the names whose `let` failed (their uses stay silent).
    `incomplete`: an import failed to parse, so an unknown name may be one of
    its constants and is not reported."""

    def __init__(self, values: Mapping[str, Any] | None = None, spans: Mapping[str, Span] | None = None,
                 failed: set[str] | None = None, incomplete: bool = False):
        self.values = values if values is not None else {}
        self.spans = spans if spans is not None else {}
        self.failed = failed if failed is not None else set()
        self.incomplete = incomplete

    def snapshot(self) -> "Scope":
        """A copy that later lets do not change (what a block definition sees)."""
        return Scope(dict(self.values), dict(self.spans), set(self.failed), self.incomplete)

    def with_values(self, values: Mapping[str, Any]) -> "Scope":
        """This scope plus `values` in front (a block call's arguments)."""
        return Scope(ChainMap(dict(values), self.values), self.spans, self.failed, self.incomplete)

    def __contains__(self, name: str) -> bool:
        return name in self.values or name in self.failed


def where(span: Span, here: str | None) -> str:
    """'line 3', or 'other.spec:3' for a definition in another file."""
    return f"line {span.line}" if span.file == here else f"{span.file}:{span.line}"


class Evaluator:
    """Evaluates expressions in a scope, reporting mistakes to `out`; a
    failed evaluation raises Reported after its diagnostic."""

    def __init__(self, out: Collector):
        self.out = out

    def let(self, item: ast.Let, scope: Scope) -> None:
        if item.name in scope:
            at = scope.spans.get(item.name)
            self.out.error(f"constant '{item.name}' is already defined" + (f" on {where(at, item.span.file)}"
                                                                           if at else ""),
                           item.name_span, "each let defines a new name once")
            return
        try:
            value = self.eval(item.value, scope)
        except Reported:
            scope.failed.add(item.name)
            return
        scope.values[item.name] = value
        scope.spans[item.name] = item.span

    def eval(self, e: ast.Expr, scope: Scope, symbolic: bool = False) -> Any:
        """The value of `e`. `symbolic`: an unknown bare word is a Symbol
        (activation=relu) for the binder to check, not an unknown name."""
        if isinstance(e, ast.Number) and not math.isfinite(e.value):  # 1e400 reads as inf
            self.out.error("number too large", e.span, "numbers must stay below about 1.8e308")
            raise Reported
        if isinstance(e, (ast.Number, ast.String, ast.Bool)):
            return e.value
        if isinstance(e, ast.Name):
            return self.name(e, scope, symbolic)
        if isinstance(e, ast.ListExpr):
            return [self.eval(i, scope, symbolic) for i in e.items]
        if isinstance(e, ast.Unary):
            v = self.eval(e.operand, scope)
            self.number(v, e.operand.span, e.op)
            return -v if e.op == "-" else v
        if isinstance(e, ast.BinOp):
            a, b = self.eval(e.left, scope), self.eval(e.right, scope)
            self.number(a, e.left.span, e.op)
            self.number(b, e.right.span, e.op)
            return self.arith(e, a, b)
        if isinstance(e, ast.CallExpr):
            self.out.error(f"'{e.name}(...)' cannot be used as a value here", e.span,
                           "calls name layers in a model, or data, optimizer and schedule settings in a train block")
            raise Reported
        raise Reported  # pragma: no cover - every node kind is handled above

    def name(self, e: ast.Name, scope: Scope, symbolic: bool) -> Any:
        if e.name in scope.values:
            return scope.values[e.name]
        if e.name in scope.failed:
            raise Reported  # its let was reported already
        if symbolic or e.name in KNOWN_WORDS:
            return Symbol(e.name)
        if scope.incomplete:
            raise Reported  # perhaps defined in an import that failed to parse
        best = did_you_mean(e.name, scope.values) or did_you_mean(e.name, KNOWN_WORDS)
        self.out.error(f"unknown name '{e.name}'", e.span,
                       f"did you mean {best}?" if best else f"define it above with `let {e.name} = ...`")
        raise Reported

    def number(self, v: Any, span: Span, op: str) -> None:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            shown = f"'{v}'" if isinstance(v, Symbol) else repr(v) if isinstance(v, str) else _describe(v)
            self.out.error(f"'{op}' needs numbers, got {shown}", span, "arithmetic works on numbers and let constants")
            raise Reported

    def arith(self, e: ast.BinOp, a, b):
        op = e.op
        if op in ("/", "//", "%") and b == 0:
            self.out.error("division by zero", e.span, "the right-hand side of this division is 0")
            raise Reported
        try:
            if op == "**":
                if abs(a) > 1 and (abs(b) > 256 or abs(a) ** min(abs(b), 256) > MAX_INT):
                    self.too_large(e.span)
                r = a ** b
                if isinstance(r, complex):
                    self.out.error("this power has no real value", e.span, "a negative number's root is not real")
                    raise Reported
            else:
                r = {"+": lambda: a + b, "-": lambda: a - b, "*": lambda: a * b, "/": lambda: a / b,
                     "//": lambda: a // b, "%": lambda: a % b}[op]()
        except (OverflowError, ZeroDivisionError):
            self.too_large(e.span)
        if (isinstance(r, int) and abs(r) > MAX_INT) or (isinstance(r, float) and not math.isfinite(r)):
            self.too_large(e.span)
        return r

    def too_large(self, span: Span):
        self.out.error("number too large", span, "integers must stay below 2**62, decimals below about 1.8e308")
        raise Reported
