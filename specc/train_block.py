"""Train blocks: each setting checked by its entry in one explicit table,
calls (data, optimizer, schedule, recipe) bound by the shared binder, every
default filled into the IR. What a recipe needs of the file's models is
checked in specc.recipe_checks.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

from . import ast, options
from .binding import Binder, option_signature
from .catalogue import Symbol, _describe
from .constants import Scope
from .diagnostics import Reported, suggestion
from .ir import Call, Model, Train
from .recipe_checks import RecipeChecker

EXAMPLES = {"data": "data = mnist(validation_split=0.2)", "loss": "loss = cross_entropy"}


class TrainChecker:
    def __init__(self, binder: Binder, models: Mapping[str, Model | None] | None = None):
        """`models`: every model of the file by name (None: its definition failed)."""
        self.binder = binder
        self.out = binder.out
        self.recipes = RecipeChecker(self.out, models if models is not None else {})

    def train(self, t: ast.TrainDef, model: Model | None, scope: Scope) -> Train | None:
        before = self.out.count
        seen = self.settings(t)
        values: dict[str, Any] = {}
        failed = False  # also when a failure was reported before (a failed let)
        for key, s in seen.items():
            try:
                values[key] = SETTINGS[key](self, s, scope)
            except Reported:
                failed = True
        if failed or self.out.count != before:
            return None
        recipe = values.get("recipe")
        if model is not None and _loss_trains_model(recipe, values.get("loss")):
            self.loss_fits_model(values["loss"], model, seen["loss"])
        if model is not None and recipe is not None:
            self.recipes.check(recipe, seen["recipe"], model, seen, values.get("loss"))
        if self.out.count != before:
            return None
        return Train(
            model=t.name,
            data=values["data"],
            loss=values.get("loss") or options.RECIPE_LOSS[recipe.name],
            optimizer=values.get("optimizer", Call("adam", dict(options.OPTIMIZERS["adam"]))),
            batch=values.get("batch", options.DEFAULTS["batch"]),
            epochs=values.get("epochs", options.DEFAULTS["epochs"]),
            metrics=values.get("metrics", ()),
            seed=values.get("seed", 0),
            schedule=values.get("schedule", Call("constant", {})),
            patience=values.get("patience"),
            recipe=recipe,
        )

    def settings(self, t: ast.TrainDef) -> dict[str, ast.Setting]:
        """The settings by key, each known and given once, the required ones present."""
        seen: dict[str, ast.Setting] = {}
        for s in t.settings:
            if s.key not in SETTINGS:
                self.out.error(f"unknown train setting '{s.key}'", s.key_span, suggestion(s.key, SETTINGS, "settings"))
            elif s.key in seen:
                self.out.error(f"'{s.key}' is set twice", s.key_span, f"first set on line {seen[s.key].span.line}")
            else:
                seen[s.key] = s
        implied = options.RECIPE_LOSS.get(_recipe_word(seen.get("recipe")), None)
        for key in options.REQUIRED_SETTINGS:
            if key not in seen and not (key == "loss" and implied):
                self.out.error(f"train block for '{t.name}' needs {key}", t.name_span, f"add `{EXAMPLES[key]}`")
        return seen

    # ------------------------------------------------------------ kinds of setting

    def call(self, s: ast.Setting, scope: Scope, table: dict, what: str) -> Call:
        """`adam(lr=1e-3)`, `mnist` (no arguments), or a let naming one."""
        e = s.value
        if isinstance(e, ast.Name) and e.name in scope.failed:
            raise Reported
        if isinstance(e, ast.Name):
            bound = scope.values.get(e.name)
            name = bound.name if isinstance(bound, Symbol) else e.name if bound is None else None
            e = ast.CallExpr(name, (), e.span, e.span) if name is not None else e
        if not isinstance(e, ast.CallExpr):
            self.out.error(f"{s.key} must be one of {', '.join(table)}", s.value.span,
                           f"e.g. {s.key} = {next(iter(table))}()")
            raise Reported
        if e.name not in table:
            self.out.error(f"unknown {what} '{e.name}'", e.name_span, suggestion(e.name, table, what + "s"))
            raise Reported
        args = self.binder.bind(option_signature(e.name, table), e.args, e.span, scope)
        if args is None:
            raise Reported
        return Call(e.name, options.fill_derived(e.name, args))

    def word(self, e: ast.Expr, scope: Scope, allowed: tuple[str, ...], what: str) -> str:
        v = self.binder.evaluator.eval(e, scope, symbolic=True)
        if not isinstance(v, Symbol) or v.name not in allowed:
            shown = v.name if isinstance(v, Symbol) else _describe(v)
            self.out.error(f"unknown {what} '{shown}'", e.span,
                           suggestion(shown, allowed, what + "es" if what.endswith("s") else what + "s"))
            raise Reported
        return v.name

    def metrics(self, s: ast.Setting, scope: Scope) -> tuple[str, ...]:
        items = s.value.items if isinstance(s.value, ast.ListExpr) else (s.value,)
        return tuple(self.word(e, scope, options.METRICS, "metric") for e in items)

    def count(self, s: ast.Setting, scope: Scope, allow_zero: bool = False) -> int:
        v = self.binder.evaluator.eval(s.value, scope)
        if isinstance(v, bool) or not isinstance(v, int) or v < (0 if allow_zero else 1):
            kind = "non-negative" if allow_zero else "positive"
            self.out.error(f"{s.key} must be a {kind} integer, got {_describe(v)}", s.value.span)
            raise Reported
        return v

    def loss_fits_model(self, loss: str, model: Model, s: ast.Setting) -> None:
        final = model.final_activation
        fused = options.FUSED_ACTIVATION.get(loss)
        if fused and final not in (fused, "linear"):
            other = {"softmax": "cross_entropy", "sigmoid": "binary_cross_entropy"}.get(final)
            self.out.error(f"{loss} expects the model to end in {fused} (or linear logits), but '{model.name}' ends "
                           f"in {final}", s.value.span,
                           f"use loss = {other}" if other else f"end the model with activation={fused}")


def _loss_trains_model(recipe: Call | None, loss: str | None) -> bool:
    """Whether the block's loss is computed on its model's output (so must fit
    its final activation): not a GAN's, which is D's; not a loss the recipe
    refuses anyway."""
    if recipe is None:
        return True
    return recipe.name == "autoencoder" and loss in options.AUTOENCODER_LOSSES


def _recipe_word(s: ast.Setting | None) -> str | None:
    """The recipe a block names (before it is checked), to know which settings it needs."""
    if s is None:
        return None
    return s.value.name if isinstance(s.value, (ast.CallExpr, ast.Name)) else None


# Every train setting and how it is checked: (checker, setting, scope) -> value.
SETTINGS: dict[str, Callable[[TrainChecker, ast.Setting, Scope], Any]] = {
    "data": lambda c, s, scope: c.call(s, scope, options.DATASETS, "data set"),
    "loss": lambda c, s, scope: c.word(s.value, scope, options.LOSSES, "loss"),
    "optimizer": lambda c, s, scope: c.call(s, scope, options.OPTIMIZERS, "optimizer"),
    "batch": lambda c, s, scope: c.count(s, scope),
    "epochs": lambda c, s, scope: c.count(s, scope),
    "metrics": TrainChecker.metrics,
    "seed": lambda c, s, scope: c.count(s, scope, allow_zero=True),
    "schedule": lambda c, s, scope: c.call(s, scope, options.SCHEDULES, "schedule"),
    "patience": lambda c, s, scope: c.count(s, scope),
    "recipe": lambda c, s, scope: c.call(s, scope, options.RECIPES, "recipe"),
}
assert set(SETTINGS) == set(options.SETTINGS), "every setting of options.SETTINGS has a check"
