"""The one kind of run-time error a user can cause and fix.

Spec mistakes are `SpecError` diagnostics (file:line:col). Everything else a
user can get wrong at run time (data that does not fit the model, a flag out
of range, a damaged run directory or weights file, a missing framework) is a
`UserError`: the CLI prints it as one `specc: error: MESSAGE` line, plus a
`hint: ...` line when there is one, and exits with status 1.
"""

from __future__ import annotations


class UserError(Exception):
    """A problem the user can fix; `hint` says how, when a hint helps."""

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def render(self) -> str:
        """The CLI's form: `specc: error: MESSAGE` and an optional hint line."""
        return f"specc: error: {self.message}" + (f"\nhint: {self.hint}" if self.hint else "")
