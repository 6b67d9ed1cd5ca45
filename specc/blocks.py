"""Block definitions: the table of blocks a file can call (its own and its
imports'), their signatures, and the checks that need no call: duplicate and
reserved names, parameters, names inside a body, and blocks that call
themselves (directly or through others).

A block's body is checked for each call, with the call's arguments bound
(shapes depend on the input); the graph builder does that. Mistakes found
here and again during a call are reported once (the collector drops repeats).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from . import ast
from .binding import FAILED, Signature
from .catalogue import LAYERS, REQUIRED, Arg
from .constants import Evaluator, Scope, where
from .diagnostics import Collector, Reported, Span

KEYWORDS = frozenset({"model", "train", "let", "input", "import", "block", "residual", "shortcut", "repeat",
                      "concat", "branch", "true", "false"})


@dataclass(frozen=True)
class Block:
    """A checked block definition: its signature (defaults evaluated where it
    was defined) and the constants its body sees (those above it)."""

    node: ast.BlockDef
    signature: Signature
    scope: Scope
    user_names: frozenset[str]  # layer names written in the body (auto names go around them)
    broken: bool = False  # its parameter list was wrong (reported there): calls stay silent

    @property
    def name(self) -> str:
        return self.node.name


@dataclass
class BlockTable:
    blocks: dict[str, Block] = field(default_factory=dict)
    incomplete: bool = False  # an import failed to parse: unknown calls may be its blocks

    def __contains__(self, name: str) -> bool:
        return name in self.blocks

    def __getitem__(self, name: str) -> Block:
        return self.blocks[name]


def define(item: ast.BlockDef, scope: Scope, table: BlockTable, evaluator: Evaluator) -> None:
    """Check a `block` item and add it to the table."""
    out = evaluator.out
    if item.name in table:
        at = table[item.name].node.span
        out.error(f"block '{item.name}' is already defined on {where(at, item.span.file)}", item.name_span,
                  "block names must be unique (imported blocks included)")
        return
    if item.name in LAYERS:
        out.error(f"block '{item.name}' has the name of a layer", item.name_span,
                  f"name blocks in lower case, e.g. {item.name.lower()}_block")
        return
    if item.name in KEYWORDS:
        out.error(f"'{item.name}' is a keyword and cannot name a block", item.name_span,
                  f"call it, e.g., {item.name}_block")
        return
    params = _parameters(item, scope, evaluator)
    broken = len(params) < len(item.params)
    table.blocks[item.name] = Block(item, Signature(item.name, params), scope.snapshot(),
                                    frozenset(user_names(item.body, out)), broken)
    for s in _statements(item.body):
        if isinstance(s, ast.Input):
            out.error("a block has no input line", s.span,
                      "a block reads what comes before its call; the model's input line says the shape")


def _parameters(item: ast.BlockDef, scope: Scope, evaluator: Evaluator) -> tuple[Arg, ...]:
    out, args, seen = evaluator.out, [], set()
    for p in item.params:
        if p.name in seen:
            out.error(f"parameter '{p.name}' is listed twice", p.span, "give each parameter its own name")
            continue
        seen.add(p.name)
        default = REQUIRED
        used = _parameter_in(p.default, item, scope) if p.default is not None else None
        if used is not None:
            out.error(f"the default of '{p.name}' uses the parameter '{used.name}'", used.span,
                      "defaults are evaluated where the block is defined, from lets only (as in Python); "
                      f"pass {p.name} at the call, or define the value with `let`")
            default = FAILED
        elif p.default is not None:
            try:
                default = evaluator.eval(p.default, scope)
            except Reported:
                default = FAILED
        elif args and not args[-1].required:
            out.error(f"parameter '{p.name}' has no default but follows one that has", p.span,
                      "put the parameters with defaults last, as in Python")
            default = FAILED  # calls stay silent: the definition is what is wrong
        args.append(Arg(p.name, "value", default, positional=True))
    return tuple(args)


def _parameter_in(expr, item: ast.BlockDef, scope: Scope) -> ast.Name | None:
    """The first name in a default's expression that is one of the block's own
    parameters and not a constant (which a parameter would not shadow there)."""
    params = {q.name for q in item.params}
    stack = [expr]
    while stack:
        e = stack.pop()
        if isinstance(e, ast.Name) and e.name in params and e.name not in scope:
            return e
        if isinstance(e, ast.BinOp):
            stack += [e.right, e.left]
        elif isinstance(e, ast.Unary):
            stack.append(e.operand)
        elif isinstance(e, ast.ListExpr):
            stack += reversed(e.items)
    return None


def _statements(body: tuple):
    """Every statement of a body, nested ones included (not into calls)."""
    for s in body:
        yield s
        if isinstance(s, ast.Residual):
            yield from _statements(s.body)
            yield from _statements(s.shortcut or ())
        elif isinstance(s, ast.Repeat):
            yield from _statements(s.body)
        elif isinstance(s, ast.Concat):
            for b in s.branches:
                yield from _statements(b.body)


def user_names(body: tuple, out: Collector) -> dict[str, Span]:
    """The layer names written in one naming scope (a model or a block body),
    each reported if written twice."""
    names: dict[str, Span] = {}
    for s in _statements(body):
        if isinstance(s, ast.LayerStmt) and s.name is not None:
            if s.name in names:
                out.error(f"layer name '{s.name}' is already used on line {names[s.name].line}", s.name_span,
                          "layer names must be unique in a model")
            else:
                names[s.name] = s.span
    return names


def calls(body: tuple) -> list[ast.LayerStmt]:
    return [s for s in _statements(body) if isinstance(s, ast.LayerStmt)]


def check_calls(table: BlockTable, unknown, out: Collector) -> None:
    """Report unknown layers and blocks in every body (`unknown(call)` words
    it), and every cycle of blocks calling themselves."""
    for block in table.blocks.values():
        for s in calls(block.node.body):
            if s.call.name not in table and s.call.name not in LAYERS:
                unknown(s.call)
    _report_cycles(table, out)


def _report_cycles(table: BlockTable, out: Collector) -> None:
    """Depth-first over the call graph; each edge back into the current chain
    closes one cycle, reported at the chain's first call (in the block the
    cycle starts from, where a reader follows the chain)."""
    state: dict[str, str] = {}  # "active" while on the chain, then "done"
    chain: list[str] = []
    edges: list[ast.LayerStmt] = []  # edges[i]: the call from chain[i] to chain[i + 1]

    def visit(name: str) -> None:
        state[name] = "active"
        chain.append(name)
        for s in calls(table[name].node.body):
            callee = s.call.name
            if callee not in table:
                continue
            if state.get(callee) == "active":
                start = chain.index(callee)
                loop = chain[start:] + [callee]
                first = (edges[start:] + [s])[0]
                how = "itself" if len(loop) == 2 else "itself through " + ", ".join(loop[1:-1])
                out.error(f"block '{callee}' calls {how}: {' -> '.join(loop)}", first.call.name_span,
                          "a block cannot call itself, directly or through other blocks; "
                          "to repeat layers write repeat N { ... }")
            elif callee not in state:
                edges.append(s)
                visit(callee)
                edges.pop()
        chain.pop()
        state[name] = "done"

    for name in table.blocks:
        if name not in state:
            visit(name)
