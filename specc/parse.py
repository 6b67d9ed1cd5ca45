"""Text to AST: the lark LALR parser, a post-lexer for bracketed newlines, a
Transformer that builds `specc.ast` nodes with spans, and the limits on
nesting (syntax errors are worded in specc.syntax_errors).

Syntax errors are recovered from line by line (the failing line is blanked and
the file parsed again), so a file with several broken lines reports them all.
"""

from __future__ import annotations

import ast as pyast
import functools
from importlib import resources

from lark import Lark, Token, Transformer, Tree, v_args
from lark.exceptions import UnexpectedInput, VisitError

from . import ast
from .diagnostics import Diagnostic, SpecError, Span
from .syntax_errors import syntax_diagnostic

MAX_RECOVERED_ERRORS = 20
FLOAT_DIGITS = 309  # an integer literal longer than this is above 1.8e308, the largest float


class _BracketNewlines:
    """Drops newlines inside ( ) and [ ], so calls and lists may span lines."""

    always_accept = ("_NL",)

    def process(self, stream):
        depth = 0
        for tok in stream:
            if tok.type in ("LPAR", "LSQB"):
                depth += 1
            elif tok.type in ("RPAR", "RSQB"):
                depth = max(0, depth - 1)
            elif tok.type == "_NL" and depth:
                continue
            yield tok


@functools.lru_cache(maxsize=None)
def parser() -> Lark:
    grammar = resources.files("specc.grammars").joinpath("specc.lark").read_text(encoding="utf-8")
    return Lark(grammar, parser="lalr", lexer="contextual", postlex=_BracketNewlines(),
                propagate_positions=True, maybe_placeholders=True)


def _span(filename: str, meta) -> Span:
    return Span(filename, meta.line, meta.column, meta.end_line, meta.end_column)


class _ToAst(Transformer):
    """One explicit method per grammar rule (no reflection over the module)."""

    def __init__(self, filename: str):
        super().__init__()
        self.f = filename

    def _s(self, meta) -> Span:
        return _span(self.f, meta)

    def _t(self, tok: Token) -> Span:
        return Span(self.f, tok.line, tok.column, tok.end_line, tok.end_column)

    # -- expressions
    @v_args(meta=True)
    def number(self, meta, children):
        text = str(children[0])
        is_int = text.isdigit()
        if is_int and len(text.lstrip("0")) > FLOAT_DIGITS:  # beyond any float, and int() may refuse it
            return ast.Number(float("inf"), self._s(meta))  # the checker reports "number too large" here
        return ast.Number(int(text) if is_int else float(text), self._s(meta))

    @v_args(meta=True)
    def string(self, meta, children):
        return ast.String(pyast.literal_eval(str(children[0])), self._s(meta))

    @v_args(meta=True)
    def true(self, meta, children):
        return ast.Bool(True, self._s(meta))

    @v_args(meta=True)
    def false(self, meta, children):
        return ast.Bool(False, self._s(meta))

    @v_args(meta=True)
    def name(self, meta, children):
        return ast.Name(str(children[0]), self._s(meta))

    @v_args(meta=True)
    def list(self, meta, children):
        return ast.ListExpr(tuple(c for c in children if c is not None), self._s(meta))

    def _binop(op):  # noqa: N805 - a factory used in the class body
        @v_args(meta=True)
        def method(self, meta, children):
            return ast.BinOp(op, children[0], children[1], self._s(meta))

        return method

    add, sub, mul = _binop("+"), _binop("-"), _binop("*")
    div, floordiv, mod, pow = _binop("/"), _binop("//"), _binop("%"), _binop("**")

    @v_args(meta=True)
    def neg(self, meta, children):
        return ast.Unary("-", children[0], self._s(meta))

    @v_args(meta=True)
    def pos(self, meta, children):
        return ast.Unary("+", children[0], self._s(meta))

    @v_args(meta=True)
    def kwarg(self, meta, children):
        key, value = children
        return ast.Argument(str(key), value, self._s(meta), self._t(key))

    @v_args(meta=True)
    def call(self, meta, children):
        name, *args = children
        return ast.CallExpr(str(name), self.concat_args(args), self._s(meta), self._t(name))

    # -- statements
    @v_args(meta=True)
    def input_stmt(self, meta, children):
        shape, dtype = children
        return ast.Input(shape, str(dtype) if dtype else None, self._s(meta), self._t(dtype) if dtype else None)

    @v_args(meta=True)
    def layer(self, meta, children):
        name, call = children
        return ast.LayerStmt(str(name) if name else None, call, self._s(meta), self._t(name) if name else None)

    # -- version 2: graphs and blocks
    def _keyword(self, meta, word: str) -> Span:
        return Span(self.f, meta.line, meta.column, meta.line, meta.column + len(word))

    def group(self, children):
        return tuple(children)

    @v_args(meta=True)
    def residual(self, meta, children):
        body, shortcut = children
        return ast.Residual(body, shortcut, self._s(meta), self._keyword(meta, "residual"))

    def shortcut(self, children):
        return children[-1]

    @v_args(meta=True)
    def repeat(self, meta, children):
        count, body = children
        return ast.Repeat(count, body, self._s(meta), self._keyword(meta, "repeat"))

    @v_args(meta=True)
    def branch(self, meta, children):
        return ast.Branch(children[0], self._s(meta), self._keyword(meta, "branch"))

    def concat_args(self, children):
        return tuple(a if isinstance(a, ast.Argument) else ast.Argument(None, a, a.span)
                     for a in children if a is not None)

    @v_args(meta=True)
    def concat(self, meta, children):
        args, *branches = children
        return ast.Concat(args or (), tuple(branches), self._s(meta), self._keyword(meta, "concat"))

    @v_args(meta=True)
    def parameter(self, meta, children):
        name, default = children
        return ast.Parameter(str(name), default, self._s(meta))

    @v_args(meta=True)
    def model(self, meta, children):
        name, *body = children
        return ast.ModelDef(str(name), tuple(body), self._s(meta), self._t(name))

    @v_args(meta=True)
    def setting(self, meta, children):
        key, value = children
        return ast.Setting(str(key), value, self._s(meta), self._t(key))

    @v_args(meta=True)
    def train(self, meta, children):
        name, *settings = children
        return ast.TrainDef(str(name), tuple(settings), self._s(meta), self._t(name))

    @v_args(meta=True)
    def let(self, meta, children):
        name, value = children
        return ast.Let(str(name), value, self._s(meta), self._t(name))

    @v_args(meta=True)
    def import_stmt(self, meta, children):
        return ast.Import(pyast.literal_eval(str(children[0])), self._s(meta))

    @v_args(meta=True)
    def block_def(self, meta, children):
        name, *rest = children
        params = tuple(c for c in rest[:-1] if c is not None)
        return ast.BlockDef(str(name), params, rest[-1], self._s(meta), self._t(name))

    def start(self, children):
        return tuple(children)


def decode(data: bytes, filename: str) -> str:
    """UTF-8 text, or a SpecError pointing at the first undecodable byte."""
    if b"\x00" in data:
        pos = data.index(b"\x00")
        line = data.count(b"\n", 0, pos) + 1
        col = pos - (data.rfind(b"\n", 0, pos) + 1) + 1
        raise SpecError([Diagnostic("this file contains a NUL byte; it looks binary, not a spec",
                                    Span.point(filename, line, col), "a spec is UTF-8 text, such as specs/lenet.spec")])
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        line_start = data.rfind(b"\n", 0, err.start) + 1
        # Columns count characters, as everywhere else; the bytes before the bad one are valid.
        col = len(data[line_start : err.start].decode("utf-8")) + 1
        shown = data.decode("utf-8", errors="replace").replace("\r\n", "\n").replace("\r", "\n")
        raise SpecError([Diagnostic(f"byte 0x{data[err.start]:02x} is not valid UTF-8",
                                    Span.point(filename, line, col), "save the file as UTF-8 text")],
                        shown) from None
    return text.lstrip("\ufeff")


def parse(text: str, filename: str = "<string>") -> ast.File:
    """Parse spec text to an AST; raises SpecError with every syntax error found."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    diagnostics: list[Diagnostic] = []
    current = text
    for _ in range(MAX_RECOVERED_ERRORS):
        try:
            tree = parser().parse(current)
            break
        except UnexpectedInput as err:
            diag = syntax_diagnostic(err, current, filename, original=text)
            if diag in diagnostics:  # blanking a line changed nothing (e.g. at end of file)
                break
            diagnostics.append(diag)
            if not _blank_line(current, diag.line):
                break
            current = _blank_line(current, diag.line)
    if diagnostics:
        raise SpecError(diagnostics, text)
    deep = _too_deep_in(tree, filename)
    if deep is not None:
        raise SpecError([deep], text)
    try:
        items = _ToAst(filename).transform(tree)
    except VisitError as err:  # lark wraps what a transformer method raises
        raise err.orig_exc from None
    return ast.File(tuple(items), filename)


# Deeper expressions than this are refused before they reach recursive code
# (the transformer, the checker's evaluator); nobody writes them by hand.
MAX_NESTING = 200
_EXPRESSION_RULES = {"add", "sub", "mul", "div", "floordiv", "mod", "neg", "pos", "pow", "list"}
_NESTING_STATEMENTS = {"residual", "repeat", "concat"}


def _too_deep_in(tree, filename: str) -> Diagnostic | None:
    """A diagnostic at the start of the first expression nested more than
    MAX_NESTING deep, or None; walks the tree without recursion."""
    stack = [(tree, 0, None)]
    while stack:
        node, depth, root = stack.pop()
        if not isinstance(node, Tree):
            continue
        if root is None and (node.data in _EXPRESSION_RULES or node.data in _NESTING_STATEMENTS):
            root = node
        if depth > MAX_NESTING and root is not None:
            return too_deep(filename, root.meta.line, root.meta.column,
                            "statements" if root.data in _NESTING_STATEMENTS else "expression")
        stack.extend((child, depth + 1 if root is not None else 0, root) for child in node.children)
    return None


def too_deep(filename: str, line: int = 1, column: int = 1, what: str = "expression") -> Diagnostic:
    if what == "statements":
        return Diagnostic("these statements are nested too deeply", Span.point(filename, line, column),
                          f"split them into blocks (at most {MAX_NESTING // 2} levels of residual, repeat or concat)")
    return Diagnostic("this expression is nested too deeply", Span.point(filename, line, column),
                      f"simplify the expression, or split it with `let` (at most {MAX_NESTING} levels)")


def _blank_line(text: str, line: int | None) -> str | None:
    """The text with one line blanked, to look for further syntax errors; None
    where that would only produce follow-on noise (braces, end of file)."""
    lines = text.split("\n")
    if line is None or not 1 <= line <= len(lines):
        return None
    if any(c in lines[line - 1] for c in "{}") or not lines[line - 1].strip():
        return None
    # A line inside an unclosed bracket would cascade; stop there too.
    before = "\n".join(lines[: line - 1])
    if before.count("(") != before.count(")") or before.count("[") != before.count("]"):
        return None
    lines[line - 1] = ""
    return "\n".join(lines)
