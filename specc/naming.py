"""Names of graph nodes, and the diagnostic for a call to nothing known.

See specc.graph for the naming rules: one `Names` per naming scope (a model,
or one block call), whose prefix is the call's name.
"""

from __future__ import annotations

from typing import AbstractSet

from . import ast
from .blocks import BlockTable
from .catalogue import ACTIVATION_LAYERS, ALIASES, LAYERS
from .diagnostics import Collector, suggestion

WRITABLE_LAYERS = tuple(kind for kind, d in LAYERS.items() if not d.merge)


class Names:
    """Keras-style automatic names in one scope, around the names the user
    wrote anywhere in it (`reserved`)."""

    def __init__(self, prefix: str, reserved: AbstractSet[str]):
        self.prefix, self.reserved = prefix, reserved
        self.counters: dict[str, int] = {}
        self.given: dict[str, ast.LayerStmt] = {}

    def auto(self, stem: str) -> str:
        n = self.counters.get(stem, 0)
        while True:
            n += 1
            name = f"{stem}_{n}"
            if name not in self.reserved:
                self.counters[stem] = n
                return self.prefix + name

    def user(self, s: ast.LayerStmt, out: Collector) -> str | None:
        """The user's name for this statement, or None (reported) when a
        `repeat` would give it a second time."""
        if s.name in self.given:
            if self.given[s.name] is s:  # the same statement again: written inside a repeat
                out.error(f"layer name '{s.name}' would be given more than once by repeat", s.name_span,
                          "leave layers inside repeat unnamed (they are numbered), or name the block call around them")
            return None  # else written twice, reported with the scope's names
        self.given[s.name] = s
        return self.prefix + s.name


def unknown_call(call: ast.CallExpr, blocks: BlockTable, out: Collector) -> None:
    """Report a call that is neither a layer nor a block, with the closest name."""
    name = call.name
    merge = name if name in LAYERS else ALIASES.get(name)
    if merge in LAYERS and LAYERS[merge].merge:  # Add, Concat (Concatenate)
        form = "residual { ... }" if merge == "Add" else "concat { branch { ... } branch { ... } }"
        out.error(f"{name} joins branches and is not written as a layer", call.name_span, f"write {form}")
        return
    if blocks.incomplete and name[:1].islower():
        return  # maybe a block of the import that failed to parse: no guess
    if name in ALIASES:
        hint = f"in specc this layer is called {ALIASES[name]}"
    elif name.islower() and name in ACTIVATION_LAYERS.values():
        match = next(k for k, v in ACTIVATION_LAYERS.items() if v == name)
        hint = f"did you mean {match}? (or activation={name} on the layer before)"
    else:
        hint = suggestion(name, WRITABLE_LAYERS + tuple(blocks.blocks), "layers and blocks")
    if name[:1].islower():
        known = ", ".join(blocks.blocks) or "none"
        out.error(f"unknown block '{name}'", call.name_span, hint or f"blocks defined: {known}")
    else:
        out.error(f"unknown layer '{name}'", call.name_span, hint or "layers: " + ", ".join(WRITABLE_LAYERS))
