"""Text to AST: the lark LALR parser, a post-lexer for bracketed newlines, a
Transformer that builds `specc.ast` nodes with spans, and syntax-error wording.

Syntax errors are recovered from line by line (the failing line is blanked and
the file parsed again), so a file with several broken lines reports them all.
"""

from __future__ import annotations

import ast as pyast
import functools
from importlib import resources

from lark import Lark, Token, Transformer, v_args
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken, VisitError

from . import ast
from .diagnostics import Diagnostic, SpecError, Span

MAX_RECOVERED_ERRORS = 20


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
        arguments = tuple(
            a if isinstance(a, ast.Argument) else ast.Argument(None, a, a.span)
            for a in args
            if a is not None
        )
        return ast.CallExpr(str(name), arguments, self._s(meta), self._t(name))

    # -- statements
    @v_args(meta=True)
    def input_stmt(self, meta, children):
        shape, dtype = children
        return ast.Input(shape, str(dtype) if dtype else None, self._s(meta), self._t(dtype) if dtype else None)

    @v_args(meta=True)
    def layer(self, meta, children):
        name, call = children
        return ast.LayerStmt(str(name) if name else None, call, self._s(meta), self._t(name) if name else None)

    @v_args(meta=True)
    def residual(self, meta, children):
        return ast.Residual(tuple(children), self._s(meta))

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
        params = tuple(str(c) for c in rest if isinstance(c, Token))
        body = tuple(c for c in rest if c is not None and not isinstance(c, Token))
        return ast.BlockDef(str(name), params, body, self._s(meta))

    def start(self, children):
        return tuple(children)


# ---------------------------------------------------------------- errors

_TOKEN_WORDS = {
    "NAME": "a name", "NUMBER": "a number", "STRING": "a string",
    "LPAR": "'('", "RPAR": "')'", "LSQB": "'['", "RSQB": "']'", "LBRACE": "'{'", "RBRACE": "'}'",
    "COMMA": "','", "EQUAL": "'='", "COLON": "':'", "SEMICOLON": "';'", "_NL": "a new line",
    "PLUS": "'+'", "MINUS": "'-'", "STAR": "'*'", "SLASH": "'/'", "PERCENT": "'%'",
    "__ANON_0": "'//'", "__ANON_1": "'**'", "$END": "the end of the file",
}


def _word(token_type: str) -> str:
    if token_type in _TOKEN_WORDS:
        return _TOKEN_WORDS[token_type]
    if token_type.isupper() and token_type.isalpha():
        return f"'{token_type.lower()}'"  # keywords: MODEL -> 'model'
    return token_type


def _expected(expected) -> str:
    words = sorted({_word(t) for t in expected if not t.startswith("__ANON") and t != "_NL"} |
                   ({"a new line"} if "_NL" in expected else set()))
    if not words:
        return ""
    if len(words) > 6:
        # Inside a call or list almost anything may follow; the useful part is
        # which separator or closing bracket would have been accepted.
        closers = [w for w in ("','", "')'", "']'") if w in words]
        return "; expected " + " or ".join(closers) if closers else "; expected a statement or an expression"
    return "; expected " + (", ".join(words[:-1]) + " or " + words[-1] if len(words) > 1 else words[0])


def _shown(tok: Token) -> str:
    if tok.type == "_NL":
        return "end of line"
    if tok.type == "$END":
        return "end of file"
    return f"'{tok}'"


def _syntax_diagnostic(err: UnexpectedInput, text: str, filename: str, original: str | None = None) -> Diagnostic:
    """`text` is what the parser saw (earlier broken lines blanked, so offsets
    refer to it); `original` is the file as written, for the end-of-file position."""
    line, col = max(err.line, 1), max(err.column, 1)
    if isinstance(err, UnexpectedCharacters):
        ch = text[err.pos_in_stream] if err.pos_in_stream < len(text) else ""
        hint = {
            "'": 'strings use double quotes: "path/to/file.npz"',
            "{": "a block opens after `model NAME` or `train NAME`",
            "=": "a setting is `key = value`, inside a train block",
            "@": "specc has no decorators or operators with '@'",
        }.get(ch, "identifiers are letters, digits and _; numbers like 12, 0.5, 1e-3")
        return Diagnostic(f"unexpected character {ch!r}", Span.point(filename, line, col), hint)

    if isinstance(err, UnexpectedEOF) or (isinstance(err, UnexpectedToken) and err.token.type == "$END"):
        lines = (original if original is not None else text).splitlines() or [""]
        line = len(lines)
        col = len(lines[-1]) + 1 if lines else 1
        expected = getattr(err, "expected", None) or getattr(err, "accepts", set())
        unclosed = _unclosed_bracket(text)
        if unclosed:
            opener, open_line = unclosed
            closer = {"{": "}", "(": ")", "[": "]"}[opener]
            hint = f"the '{opener}' on line {open_line} is never closed; add a '{closer}'"
        else:
            hint = "the last statement is incomplete"
        return Diagnostic("unexpected end of file" + _expected(expected), Span.point(filename, line, col), hint)

    tok = err.token
    expected = err.accepts or err.expected
    span = Span(filename, tok.line, tok.column, tok.end_line, tok.end_column) if tok.type != "_NL" \
        else Span.point(filename, line, col)
    message = f"unexpected {_shown(tok)}" + _expected(expected)
    hint = None
    if "RPAR" in expected and tok.type in ("NAME", "NUMBER", "STRING", "LSQB") and tok.line > _open_line(err):
        unclosed = _unclosed_bracket(text[: tok.start_pos]) if tok.start_pos is not None else None
        where = f"on line {unclosed[1]}" if unclosed and unclosed[0] == "(" else "on an earlier line"
        hint = f"the '(' {where} is never closed; add a ')'"
    elif "COMMA" in expected and tok.type in ("NAME", "NUMBER", "STRING", "LSQB"):
        hint = "separate arguments and list items with ','"
    elif tok.type == "EQUAL":
        hint = "`key = value` settings belong in a train block; a layer argument is written key=value inside ( )"
    elif tok.type == "NAME" and "LPAR" in expected:
        hint = f"a layer is a call, e.g. {tok}(...); a name is written `name: Layer(...)`"
    elif tok.type == "NAME" and "_NL" in expected:
        hint = "put each statement on its own line or separate them with ';'"
    elif tok.type == "LBRACE":
        hint = "blocks are `model NAME { ... }` and `train NAME { ... }`"
    elif tok.type in ("RSQB", "RPAR", "RBRACE"):
        hint = "brackets must be balanced"
    return Diagnostic(message, span, hint)


def _unclosed_bracket(text: str) -> tuple[str, int] | None:
    """The innermost bracket left open at the end of the text, and its line
    (comments and strings skipped), or None when all are balanced."""
    stack: list[tuple[str, int]] = []
    pairs = {")": "(", "]": "[", "}": "{"}
    line, i, n = 1, 0, len(text)
    while i < n:
        c = text[i]
        if c == "\n":
            line += 1
        elif c == "#":
            i = text.find("\n", i)
            if i < 0:
                break
            continue
        elif c == '"':  # skip the string; an unterminated one ends at the line's end
            i += 1
            while i < n and text[i] not in '"\n':
                i += 2 if text[i] == "\\" and text[i + 1 : i + 2] not in ("", "\n") else 1
            if i < n and text[i] == "\n":
                continue
        elif c in "([{":
            stack.append((c, line))
        elif c in pairs and stack and stack[-1][0] == pairs[c]:
            stack.pop()
        i += 1
    return stack[-1] if stack else None


def _open_line(err: UnexpectedToken) -> int:
    # The line of the token the parser last shifted, if it knows it.
    try:
        return err.interactive_parser.parser_state.value_stack[-1].line  # type: ignore[union-attr]
    except Exception:  # noqa: BLE001 - best effort, only for a hint
        return err.token.line


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
            diag = _syntax_diagnostic(err, current, filename, original=text)
            if diag in diagnostics:  # blanking a line changed nothing (e.g. at end of file)
                break
            diagnostics.append(diag)
            if not _blank_line(current, diag.line):
                break
            current = _blank_line(current, diag.line)
        except RecursionError:
            diagnostics.append(too_deep(filename))
            break
    if diagnostics:
        raise SpecError(diagnostics, text)
    try:
        items = _ToAst(filename).transform(tree)
    except RecursionError:
        raise SpecError([too_deep(filename)], text) from None
    except VisitError as err:  # lark wraps what a transformer method raises
        if isinstance(err.orig_exc, RecursionError):
            raise SpecError([too_deep(filename)], text) from None
        raise
    return ast.File(tuple(items), filename)


def too_deep(filename: str) -> Diagnostic:
    return Diagnostic("this expression is nested too deeply", Span.point(filename, 1, 1),
                      "simplify the expression, or split it with `let`")


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
