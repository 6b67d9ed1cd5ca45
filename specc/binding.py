"""The one argument binder: positional and keyword arguments of a call to
typed values, by a signature, with one wording for every mistake.

Layers (`Conv2D(20, kernel=5)`), block calls (`basic(32, stride=2)`),
`concat(axis=0)`, and a train block's data sets, optimizers and schedules
(`adam(lr=1e-3)`) all bind here, so a mistake reads the same wherever it is:

    Conv2D has no argument 'strides'          adam has no argument 'lrr'
    Conv2D needs kernel                       basic needs filters
    Dense: units must be a positive integer   mnist: validation_split must be in [0, 1)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from . import ast, catalogue, options
from .catalogue import Arg, LayerError, Symbol, _describe
from .constants import Evaluator, Scope
from .diagnostics import Reported, Span, suggestion

# Argument types whose bare words are names of things (checked by the
# converter, with its own did-you-mean, or for a recipe's `model`, by the
# train block checker against the file's models), not constants.
SYMBOLIC_TYPES = ("activation", "padding", "transpose_padding", "model")

# A block parameter takes any value a constant can have.
CONVERTERS = {**catalogue.CONVERTERS, **options.CONVERTERS, "value": lambda value, name: value}
TYPE_WORDS = {**catalogue.TYPE_WORDS, **options.TYPE_WORDS, "value": "a value"}

FAILED = object()  # a default whose own expression was wrong (reported where it was written)


@dataclass(frozen=True)
class Signature:
    """What a call accepts: `owner` names it in messages (Dense, adam, basic)."""

    owner: str
    args: tuple[Arg, ...]

    @property
    def positional(self) -> tuple[Arg, ...]:
        return tuple(a for a in self.args if a.positional)

    def arg(self, name: str) -> Arg | None:
        return next((a for a in self.args if a.name == name), None)

    def text(self) -> str:
        """`Conv2D(filters, kernel; stride=1, ...)`: positional arguments, then
        after ';' the keyword-only ones, with their defaults."""
        def shown(a: Arg) -> str:
            return a.name if a.required else f"{a.name}={_default_text(a.default)}"

        positional = ", ".join(shown(a) for a in self.args if a.positional)
        keywords = ", ".join(shown(a) for a in self.args if not a.positional)
        return f"{self.owner}(" + "; ".join(part for part in (positional, keywords) if part) + ")"

    def takes(self) -> str:
        return f"{self.owner} takes {self.text()}" if self.args else f"{self.owner} takes no arguments"


def _default_text(v: Any) -> str:
    if v is None:
        return "none"
    if v is FAILED:
        return "?"
    return v.name if isinstance(v, Symbol) else _describe(v)


def layer_signature(d: catalogue.LayerDef) -> Signature:
    return Signature(d.kind, d.args)


def option_signature(name: str, table: dict) -> Signature:
    return Signature(name, options.arguments(name, table[name]))


class Binder:
    def __init__(self, evaluator: Evaluator):
        self.evaluator = evaluator
        self.out = evaluator.out

    def bind(self, sig: Signature, args: tuple[ast.Argument, ...], span: Span, scope: Scope) -> dict | None:
        """Arguments to typed values, defaults filled in; None after reporting
        every mistake. `span` (the whole call) is where a missing one is reported."""
        given, supplied, ok = self._match(sig, args, scope)
        # After a positional argument that follows a keyword, which parameter it
        # meant is unclear: no 'needs X' as well.
        misplaced = any(a.name is None for a in args[next((i for i, a in enumerate(args) if a.name), len(args)):])
        values = {}
        for arg in sig.args:
            if arg.name in given:
                values[arg.name] = given[arg.name]
            elif arg.default is FAILED:
                ok = False
            elif arg.required:
                if arg.name not in supplied and not misplaced:
                    self.out.error(f"{sig.owner} needs {arg.name}", span, sig.takes())
                ok = False
            else:
                default = arg.default
                values[arg.name] = default if default is None else CONVERTERS[arg.type](default, arg.name)
        return values if ok else None

    def _match(self, sig: Signature, args, scope: Scope) -> tuple[dict, set, bool]:
        """Each written argument to its parameter and converted value. `supplied`
        holds what was written even if wrong (then no 'needs X' as well)."""
        given: dict[str, Any] = {}
        supplied: set[str] = set()
        ok, seen_keyword = True, False
        for k, a in enumerate(args):
            if a.name is not None:
                seen_keyword = True
            elif seen_keyword:
                self.out.error("a positional argument cannot follow a keyword argument", a.span,
                               "put positional arguments first")
                ok = False
                continue
            arg = self._parameter(sig, k, a)
            if arg is None:
                ok = False
                continue
            if arg.name in supplied:
                self.out.error(f"argument '{arg.name}' is given twice", a.span,
                               f"give each argument once; {sig.takes()}")
                ok = False
                continue
            supplied.add(arg.name)
            try:
                given[arg.name] = self._value(sig, arg, a, scope)
            except Reported:
                ok = False
        return given, supplied, ok

    def _parameter(self, sig: Signature, k: int, a: ast.Argument) -> Arg | None:
        if a.name is None:
            positional = sig.positional
            if k < len(positional):
                return positional[k]
            names = ", ".join(p.name for p in positional)
            plural = "" if len(positional) == 1 else "s"
            self.out.error(f"{sig.owner} takes {len(positional)} positional argument{plural}"
                           + (f" ({names})" if names else "") + f", got {k + 1}", a.span,
                           (f"name the others: {sig.text()}" if positional else f"name it: {sig.text()}")
                           if sig.args else sig.takes())
            return None
        arg = sig.arg(a.name)
        if arg is None:
            hint = suggestion(a.name, [x.name for x in sig.args], "arguments") if sig.args else None
            self.out.error(f"{sig.owner} has no argument '{a.name}'", a.name_span or a.span, hint or sig.takes())
        return arg

    def _value(self, sig: Signature, arg: Arg, a: ast.Argument, scope: Scope) -> Any:
        value = self.evaluator.eval(a.value, scope, symbolic=arg.type in SYMBOLIC_TYPES)
        if _holds_symbol(value) and arg.type not in SYMBOLIC_TYPES + ("value",):
            self.out.error(f"{sig.owner}: {arg.name} must be {TYPE_WORDS[arg.type]}, got {_describe_value(value)}",
                           a.span)
            raise Reported
        try:
            return CONVERTERS[arg.type](value, arg.name)
        except LayerError as err:
            self.out.error(f"{sig.owner}: {err.message}", a.span, err.hint)
            raise Reported from None


def _holds_symbol(value: Any) -> bool:
    if isinstance(value, (list, tuple)):
        return any(_holds_symbol(v) for v in value)
    return isinstance(value, Symbol)


def _describe_value(value: Any) -> str:
    if isinstance(value, Symbol):
        return f"'{value}'"
    return _describe(value)


def argument_span(call: ast.CallExpr, sig: Signature, arg: str | None) -> Span:
    """Where argument `arg` was written in `call` (the whole call if it was not)."""
    if arg is None:
        return call.span
    for a in call.args:
        if a.name == arg:
            return a.span
    positional = [a for a in call.args if a.name is None]
    names = [x.name for x in sig.positional]
    if arg in names and names.index(arg) < len(positional):
        return positional[names.index(arg)].span
    return call.span
