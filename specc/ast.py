"""Syntax tree: frozen dataclasses, each carrying the `Span` it was written at.

Produced by specc.parse, consumed only by the checker (specc.check and the
modules it is made of); nothing below the IR ever sees these.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

from .diagnostics import Span


@dataclass(frozen=True)
class Number:
    value: int | float
    span: Span


@dataclass(frozen=True)
class String:
    value: str
    span: Span


@dataclass(frozen=True)
class Bool:
    value: bool
    span: Span


@dataclass(frozen=True)
class Name:
    name: str
    span: Span


@dataclass(frozen=True)
class ListExpr:
    items: tuple["Expr", ...]
    span: Span


@dataclass(frozen=True)
class BinOp:
    op: str  # + - * / // % **
    left: "Expr"
    right: "Expr"
    span: Span


@dataclass(frozen=True)
class Unary:
    op: str  # - +
    operand: "Expr"
    span: Span


@dataclass(frozen=True)
class Argument:
    name: str | None  # None for a positional argument
    value: "Expr"
    span: Span  # the whole `name=value`
    name_span: Span | None = None


@dataclass(frozen=True)
class CallExpr:
    name: str
    args: tuple[Argument, ...]
    span: Span
    name_span: Span


Expr = Union[Number, String, Bool, Name, ListExpr, BinOp, Unary, CallExpr]


@dataclass(frozen=True)
class Input:
    shape: ListExpr
    dtype: str | None
    span: Span
    dtype_span: Span | None = None


@dataclass(frozen=True)
class LayerStmt:
    name: str | None
    call: CallExpr
    span: Span
    name_span: Span | None = None


# ---------------------------------------------------------------- version 2: graphs
# A body is a tuple of statements: Input | LayerStmt | Residual | Repeat | Concat.
# `keyword` spans cover only the opening word, so a caret underlines it alone.


@dataclass(frozen=True)
class Residual:
    body: tuple
    shortcut: tuple | None  # None: the identity
    span: Span
    keyword: Span


@dataclass(frozen=True)
class Repeat:
    count: "Expr"
    body: tuple
    span: Span
    keyword: Span


@dataclass(frozen=True)
class Branch:
    body: tuple
    span: Span
    keyword: Span


@dataclass(frozen=True)
class Concat:
    args: tuple[Argument, ...]
    branches: tuple[Branch, ...]
    span: Span
    keyword: Span


Statement = Union[Input, LayerStmt, Residual, Repeat, Concat]


@dataclass(frozen=True)
class ModelDef:
    name: str
    body: tuple  # of Statement
    span: Span
    name_span: Span


@dataclass(frozen=True)
class Setting:
    key: str
    value: Expr
    span: Span
    key_span: Span


@dataclass(frozen=True)
class TrainDef:
    name: str
    settings: tuple[Setting, ...]
    span: Span
    name_span: Span


@dataclass(frozen=True)
class Let:
    name: str
    value: Expr
    span: Span
    name_span: Span


@dataclass(frozen=True)
class Import:
    path: str
    span: Span


@dataclass(frozen=True)
class Parameter:
    name: str
    default: "Expr | None"  # None: the argument is required
    span: Span


@dataclass(frozen=True)
class BlockDef:
    name: str
    params: tuple[Parameter, ...]
    body: tuple  # of Statement
    span: Span
    name_span: Span


@dataclass(frozen=True)
class File:
    items: tuple
    filename: str
