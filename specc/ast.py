"""Syntax tree: frozen dataclasses, each carrying the `Span` it was written at.

Produced by specc.parse, consumed only by specc.check; nothing below the IR
ever sees these.
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


@dataclass(frozen=True)
class Residual:  # reserved for a later version
    body: tuple
    span: Span


@dataclass(frozen=True)
class ModelDef:
    name: str
    body: tuple  # Input | LayerStmt | Residual
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
class Import:  # reserved for a later version
    path: str
    span: Span


@dataclass(frozen=True)
class BlockDef:  # reserved for a later version
    name: str
    params: tuple[str, ...]
    body: tuple
    span: Span


@dataclass(frozen=True)
class File:
    items: tuple
    filename: str
