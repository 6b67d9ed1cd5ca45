"""`import "other.spec"`: finding the file (relative to the importing one),
checking it once however often it is imported, diagnosing cycles with the
chain of files, and keeping every file's text so that each diagnostic is
shown with its own file's source line.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from . import ast
from .blocks import Block
from .constants import Scope
from .diagnostics import Collector, SpecError, suggestion
from .ir import Model, Train
from .parse import decode, parse


@dataclass
class FileResult:
    """What one checked file offers its importers (and the program)."""

    scope: Scope = field(default_factory=Scope)
    blocks: dict[str, Block] = field(default_factory=dict)
    models: dict[str, Model | None] = field(default_factory=dict)  # None: defined, but wrong
    model_spans: dict = field(default_factory=dict)
    trains: dict[str, Train] = field(default_factory=dict)
    incomplete: bool = False  # did not parse: its names are unknown


class Loader:
    """Checks a file and everything it imports. `check(tree, name, loader)`
    checks one parsed file (specc.check supplies it)."""

    def __init__(self, check: Callable[[ast.File, "Loader"], FileResult]):
        self.check = check
        self.out = Collector()
        self.sources: dict[str, str] = {}  # file name as shown -> text, in the order read
        self.results: dict[str, FileResult] = {}  # by real path
        self.chain: list[tuple[str, str]] = []  # (real path, name as shown) of the files being checked

    def load_text(self, text: str, name: str) -> FileResult:
        real = os.path.realpath(name)
        self.sources[name] = text
        self.chain.append((real, name))
        try:
            result = self.check(parse(text, name), self)
        except SpecError as err:  # syntax errors: nothing of this file is usable
            self.out.add(err.diagnostics)
            result = FileResult(incomplete=True)
        finally:
            self.chain.pop()
        self.results[real] = result
        return result

    def load_import(self, item: ast.Import, importer: str) -> FileResult:
        """The checked imported file; one that cannot be read (reported at the
        import) is `incomplete`, so its names are not reported as unknown too."""
        name = os.path.normpath(os.path.join(os.path.dirname(importer), item.path))
        real = os.path.realpath(name)
        on_chain = [r for r, _ in self.chain]
        if real in on_chain:
            files = [shown for _, shown in self.chain[on_chain.index(real):]] + [name]
            self.out.error("import cycle: " + " -> ".join(files), item.span,
                           "a file cannot import itself, directly or through others; "
                           "move what both need into a third file")
            return FileResult(incomplete=True)
        if real in self.results:
            return self.results[real]
        try:
            data = Path(name).read_bytes()
        except OSError as err:
            self._unreadable(item, name, err)
            return FileResult(incomplete=True)
        try:
            text = decode(data, name)
        except SpecError as err:
            self.out.add(err.diagnostics)
            self.sources[name] = err.source if isinstance(err.source, str) else ""
            self.results[real] = FileResult(incomplete=True)
            return self.results[real]
        return self.load_text(text, name)

    def _unreadable(self, item: ast.Import, name: str, err: OSError) -> None:
        if isinstance(err, FileNotFoundError):
            folder = os.path.dirname(name) or "."
            try:
                near = [p.name for p in Path(folder).glob("*.spec")]
            except OSError:
                near = []
            hint = suggestion(os.path.basename(name), near, "specs there") if near else None
            self.out.error(f'cannot import "{item.path}": file not found (looked for {name})', item.span,
                           hint or "the path is relative to the folder of the importing file")
        else:
            self.out.error(f'cannot import "{item.path}": {err.strerror or err}', item.span,
                           "import a spec file, such as \"blocks.spec\"")
