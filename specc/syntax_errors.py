"""Syntax errors in the user's words: what was found, what the grammar would
have accepted (by terminal name; every terminal is named in the grammar), and
a hint for the common slips (an unclosed bracket, a missing comma, ...).
"""

from __future__ import annotations

from lark import Token
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

from .diagnostics import Diagnostic, Span

_TOKEN_WORDS = {
    "NAME": "a name", "NUMBER": "a number", "STRING": "a string",
    "LPAR": "'('", "RPAR": "')'", "LSQB": "'['", "RSQB": "']'", "LBRACE": "'{'", "RBRACE": "'}'",
    "COMMA": "','", "EQUAL": "'='", "COLON": "':'", "SEMICOLON": "';'", "_NL": "a new line",
    "PLUS": "'+'", "MINUS": "'-'", "STAR": "'*'", "SLASH": "'/'", "PERCENT": "'%'",
    "DSLASH": "'//'", "DSTAR": "'**'", "$END": "the end of the file",
}


def _word(token_type: str) -> str:
    if token_type in _TOKEN_WORDS:
        return _TOKEN_WORDS[token_type]
    if token_type.isupper() and token_type.isalpha():
        return f"'{token_type.lower()}'"  # keywords: MODEL -> 'model'
    return token_type


# Where one of these may come, so may any statement: they are worded together.
_STATEMENT_STARTS = {"INPUT", "RESIDUAL", "REPEAT", "CONCAT"}


def _expected(expected) -> str:
    expected = set(expected)
    if expected & _STATEMENT_STARTS:
        expected = (expected - _STATEMENT_STARTS - {"NAME"}) | {"a statement"}
    words = sorted({_word(t) for t in expected if t != "_NL"} |
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


def syntax_diagnostic(err: UnexpectedInput, text: str, filename: str, original: str | None = None) -> Diagnostic:
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
    expected = set(err.accepts or err.expected)
    if tok.type == "NAME" and tok == "shortcut":
        expected.discard("SHORTCUT")  # it was read as a name because no '{' follows
    span = Span(filename, tok.line, tok.column, tok.end_line, tok.end_column) if tok.type != "_NL" \
        else Span.point(filename, line, col)
    message = f"unexpected {_shown(tok)}" + _expected(expected)
    hint = _graph_hint(tok, expected, text)
    if hint is not None:
        pass
    elif "RPAR" in expected and tok.type in ("NAME", "NUMBER", "STRING", "LSQB") and tok.line > _open_line(err):
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


def _word_before(tok: Token, text: str) -> str:
    """The identifier just before the token on its line ('' if none)."""
    start = tok.start_pos if tok.start_pos is not None else 0
    before = text[text.rfind("\n", 0, start) + 1 : start].rstrip()
    i = len(before)
    while i and (before[i - 1].isalnum() or before[i - 1] == "_"):
        i -= 1
    return before[i:]


def _graph_hint(tok: Token, expected: set, text: str) -> str | None:
    """Hints for the version-2 forms (residual, shortcut, repeat, concat, branch, block)."""
    if tok.type == "NAME" and tok == "shortcut" and "RBRACE" in expected:
        return "a shortcut takes a body: `residual { ... } shortcut { ... }`"
    if tok.type == "NAME" and "BRANCH" in expected:
        return "inside concat { ... } each path is written `branch { ... }`"
    if tok.type == "BRANCH":
        return "`branch { ... }` goes inside `concat { ... }`"
    if tok.type == "BLOCK" and "INPUT" in expected:
        return "blocks are defined at file level, outside any model, and called inside it"
    if tok.type == "LBRACE":
        word = _word_before(tok, text)
        if word == "repeat":
            return "repeat needs a count: `repeat N { ... }`"
        if word == "shortcut":
            return "`shortcut { ... }` follows a `residual { ... }` (on the line of its '}' or the next)"
    if _word_before(tok, text) == "import":
        return 'import takes a quoted path relative to this file: import "other.spec"'
    start = tok.start_pos or 0
    if expected == {"LBRACE"} and text[text.rfind("\n", 0, start) + 1 : start].lstrip().startswith("block"):
        return "a block's layers go in braces: `block NAME(params) { ... }`"
    return None


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
