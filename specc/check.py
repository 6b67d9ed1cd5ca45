"""AST to IR: the entry points, and the order in which a file's items are
checked. Each part lives in its own module:

    constants.py    let, scopes, arithmetic          binding.py   arguments of every call
    blocks.py       block definitions                graph.py     model bodies to graph nodes
    merges.py       residual and concat              naming.py    Keras-style node names
    models.py       one model                        train_block.py  train blocks
    imports.py      other files, cycles, sources

All independent problems are collected and raised together as one SpecError.
Items are read in order: a constant (a `let`, or one an import brings) is
usable below it; blocks, the file's and its imports', may be called from
anywhere (so that calls between blocks can be checked for cycles); models and
train blocks are checked once every item has been read, each with the
constants defined above it.
"""

from __future__ import annotations

from pathlib import Path

from . import ast
from .binding import Binder
from .blocks import BlockTable, check_calls, define
from .constants import Evaluator, Scope, where
from .diagnostics import Diagnostic, SpecError, Span, suggestion
from .imports import FileResult, Loader
from .ir import Program
from .models import build_model
from .naming import unknown_call
from .parse import decode, too_deep
from .train_block import TrainChecker


def check_file(path) -> Program:
    filename = str(path)
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        raise SpecError([Diagnostic(f"cannot read {filename}: {err.strerror or err}", None,
                                    "check the path; spec files usually end in .spec")]) from None
    return check_text(decode(data, filename), filename)


def check_text(text: str, filename: str = "<string>") -> Program:
    if isinstance(text, bytes):
        text = decode(text, filename)
    loader = Loader(_check_parsed)
    try:
        result = loader.load_text(text, filename)
    except RecursionError:  # a safety net: parse refuses expressions nested too deeply
        raise SpecError([too_deep(filename)], text) from None
    loader.out.raise_if_any(loader.sources)
    constants = {k: v for k, v in result.scope.values.items() if isinstance(v, (int, float, bool, str))}
    return Program({k: m for k, m in result.models.items() if m is not None}, result.trains, filename, constants)


def _check_parsed(tree: ast.File, loader: Loader) -> FileResult:
    return _FileChecker(tree.filename, loader).run(tree)


class _FileChecker:
    def __init__(self, filename: str, loader: Loader):
        self.filename, self.loader, self.out = filename, loader, loader.out
        self.evaluator = Evaluator(self.out)
        self.binder = Binder(self.evaluator)
        self.result = FileResult()
        self.table = BlockTable(self.result.blocks)

    def run(self, tree: ast.File) -> FileResult:
        scope = self.result.scope
        models: list[tuple[ast.ModelDef, Scope]] = []
        trains: list[tuple[ast.TrainDef, Scope]] = []
        for item in tree.items:
            if isinstance(item, ast.Let):
                self.evaluator.let(item, scope)
            elif isinstance(item, ast.Import):
                self.import_(item)
            elif isinstance(item, ast.BlockDef):
                define(item, scope, self.table, self.evaluator)
            elif isinstance(item, ast.ModelDef) and self.declare_model(item):
                models.append((item, scope.snapshot()))
            elif isinstance(item, ast.TrainDef):
                trains.append((item, scope.snapshot()))
        check_calls(self.table, lambda call: unknown_call(call, self.table, self.out), self.out)
        for item, model_scope in models:
            self.result.models[item.name] = build_model(item, model_scope, self.binder, self.table)
        self.trains(trains)
        return self.result

    def declare_model(self, item: ast.ModelDef) -> bool:
        if item.name in self.result.model_spans:
            at = self.result.model_spans[item.name]
            imported = " (imported models included)" if at.file != item.span.file else ""
            self.out.error(f"model '{item.name}' is already defined on {where(at, self.filename)}", item.name_span,
                           "model names must be unique in a file" + imported)
            return False
        self.result.model_spans[item.name] = item.span
        return True

    def trains(self, items: list[tuple[ast.TrainDef, Scope]]) -> None:
        checker = TrainChecker(self.binder, self.result.models)
        lines: dict[str, int] = {}
        for item, scope in items:
            if item.name in lines:
                self.out.error(f"model '{item.name}' already has a train block on line {lines[item.name]}",
                               item.name_span, "merge the two train blocks")
                continue
            lines[item.name] = item.span.line
            if item.name not in self.result.model_spans:
                hint = suggestion(item.name, self.result.model_spans, "models") or "define `model NAME { ... }` first"
                self.out.error(f"train block for unknown model '{item.name}'", item.name_span, hint)
                continue
            train = checker.train(item, self.result.models.get(item.name), scope)
            if train is not None:
                self.result.trains[item.name] = train

    # ------------------------------------------------------------ imports

    def import_(self, item: ast.Import) -> None:
        """Make the imported file's constants, blocks and models usable here."""
        imported = self.loader.load_import(item, self.filename)
        if imported.incomplete:
            self.result.scope.incomplete = self.table.incomplete = True
        scope = self.result.scope
        for name in self.new_names(item, "constant", imported.scope.spans, scope.spans):
            scope.values[name] = imported.scope.values[name]
            scope.spans[name] = imported.scope.spans[name]
        scope.failed |= imported.scope.failed - set(scope.values)
        ours = {k: b.node.span for k, b in self.result.blocks.items()}
        for name in self.new_names(item, "block", {k: b.node.span for k, b in imported.blocks.items()}, ours):
            self.result.blocks[name] = imported.blocks[name]
        for name in self.new_names(item, "model", imported.model_spans, self.result.model_spans):
            self.result.model_spans[name] = imported.model_spans[name]
            self.result.models[name] = imported.models.get(name)

    def new_names(self, item: ast.Import, what: str, theirs: dict[str, Span], ours: dict[str, Span]) -> list[str]:
        """The names an import adds; one defined here too (not the same definition,
        met again through another import) is reported at the import."""
        new = []
        for name, span in theirs.items():
            if name not in ours:
                new.append(name)
            elif ours[name] != span:
                self.out.error(f"{what} '{name}' of {span.file}:{span.line} is already defined on "
                               f"{where(ours[name], self.filename)}", item.span, f"rename one of the two {what}s")
        return new
