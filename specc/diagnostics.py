"""Diagnostics: source spans, the one user-facing exception, and rendering.

Every mistake a user can make in a spec becomes a `Diagnostic` with a `Span`
(file, 1-based line and column, and an end) plus an optional hint. The checker
collects them all and raises one `SpecError` carrying the list, so a user sees
every independent mistake in one run (sqlglot's "collect, then raise" level).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence, Union

# One file's text, or the texts of several files by name (a file and its imports).
Sources = Union[str, Mapping[str, str], None]


@dataclass(frozen=True)
class Span:
    """A region of a source file; lines and columns are 1-based, end is exclusive."""

    file: str
    line: int
    column: int
    end_line: int | None = None
    end_column: int | None = None

    @classmethod
    def point(cls, file: str, line: int, column: int) -> "Span":
        return cls(file, line, column, line, column + 1)


@dataclass(frozen=True)
class Diagnostic:
    message: str
    span: Span | None = None
    hint: str | None = None
    severity: str = "error"

    # Flat accessors, so API users need not know about Span.
    @property
    def file(self) -> str | None:
        return self.span.file if self.span else None

    @property
    def line(self) -> int | None:
        return self.span.line if self.span else None

    @property
    def column(self) -> int | None:
        return self.span.column if self.span else None

    def render(self, source: str | None = None) -> str:
        """`FILE:LINE:COL: error: MESSAGE`, the source line, a caret, a hint."""
        if self.span is None:
            head = f"{self.severity}: {self.message}"
            return head + (f"\nhint: {self.hint}" if self.hint else "")
        s = self.span
        out = [f"{s.file}:{s.line}:{s.column}: {self.severity}: {self.message}"]
        lines = source.splitlines() if source is not None else []
        if 1 <= s.line <= len(lines):
            text = lines[s.line - 1]
            # Place the caret on the tab-expanded line, as lark's get_context does.
            prefix = text[: s.column - 1].expandtabs()
            shown = text.expandtabs()
            if s.end_line == s.line and s.end_column and s.end_column > s.column:
                width = len(text[s.column - 1 : s.end_column - 1].expandtabs())
            elif s.end_line and s.end_line > s.line:
                width = max(1, len(shown.rstrip()) - len(prefix))
            else:
                width = 1
            # The line as written (tabs expanded), as in the language contract's example.
            out.append(shown.rstrip())
            out.append(" " * len(prefix) + "^" + "~" * max(0, width - 1))
        if self.hint:
            out.append(f"hint: {self.hint}")
        return "\n".join(out)


class SpecError(Exception):
    """The one exception the front end raises for a user's mistake.

    `.diagnostics` lists every problem found; each has `.file .line .column
    .message .hint`. `str(err)` is the rendered report, as the CLI prints it.
    `source` is the text the diagnostics point into, or, when they point into
    several files (imports), a mapping from file name to text: each diagnostic
    is shown with its own file's source line.
    """

    def __init__(self, diagnostics: Sequence[Diagnostic], source: Sources = None):
        self.diagnostics = list(diagnostics)
        self.source = source
        super().__init__(self.render())

    def source_of(self, d: Diagnostic) -> str | None:
        if isinstance(self.source, Mapping):
            return self.source.get(d.file) if d.file is not None else None
        return self.source

    def render(self) -> str:
        return "\n".join(d.render(self.source_of(d)) for d in self.diagnostics)

    # Convenience for the common single-error case.
    @property
    def message(self) -> str:
        return self.diagnostics[0].message if self.diagnostics else ""

    @property
    def hint(self) -> str | None:
        return self.diagnostics[0].hint if self.diagnostics else None

    @property
    def line(self) -> int | None:
        return self.diagnostics[0].line if self.diagnostics else None

    @property
    def column(self) -> int | None:
        return self.diagnostics[0].column if self.diagnostics else None

    @property
    def file(self) -> str | None:
        return self.diagnostics[0].file if self.diagnostics else None


def did_you_mean(word: str, known: Iterable[str]) -> str | None:
    """The closest known name, compared case-insensitively, or None."""
    known = list(known)
    lowered = {k.lower(): k for k in known}
    if word.lower() in lowered and lowered[word.lower()] != word:
        return lowered[word.lower()]
    close = difflib.get_close_matches(word.lower(), list(lowered), n=1, cutoff=0.6)
    return lowered[close[0]] if close else None


def suggestion(word: str, known: Iterable[str], what: str = "") -> str | None:
    """A ready-made hint: 'did you mean X?' or the list of known names."""
    known = sorted(set(known))
    best = did_you_mean(word, known)
    if best:
        return f"did you mean {best}?"
    if known and len(known) <= 12:
        return f"known {what or 'names'}: " + ", ".join(known)
    return None


class Reported(Exception):
    """An error already reported; abandons the construct being checked."""


@dataclass
class Collector:
    """Accumulates diagnostics during a pass; raises once at the end.

    A message already reported at the same place is not repeated: a block's
    body is checked once per call, and a mistake in it is one mistake.
    `count` counts every report, repeats included, so a pass can tell whether
    anything went wrong while it ran. `context`, while set, is added to every
    hint (which block call a mistake in a block's body comes from)."""

    diagnostics: list[Diagnostic] = field(default_factory=list)
    count: int = 0
    context: str | None = None
    _seen: set = field(default_factory=set)

    def error(self, message: str, span: Span | None = None, hint: str | None = None) -> None:
        self.count += 1
        if self.context:
            hint = f"{hint} ({self.context})" if hint else self.context
        if (message, span) not in self._seen:
            self._seen.add((message, span))
            self.diagnostics.append(Diagnostic(message, span, hint))

    def add(self, diagnostics: Iterable[Diagnostic]) -> None:
        for d in diagnostics:
            self.error(d.message, d.span, d.hint)

    def raise_if_any(self, source: Sources) -> None:
        """Sorted by file (in the order of `source` when it maps several), line, column."""
        if not self.diagnostics:
            return
        rank = {name: i for i, name in enumerate(source)} if isinstance(source, Mapping) else {}

        def key(d: Diagnostic):
            return (rank.get(d.file, len(rank)), d.span.line, d.span.column) if d.span else (-1, 0, 0)

        raise SpecError(sorted(self.diagnostics, key=key), source)
