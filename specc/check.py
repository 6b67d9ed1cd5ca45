"""AST to IR: resolve `let` constants and arithmetic, bind and check every
argument, name layers the Keras way, infer every shape, check train blocks.

All independent problems are collected and raised together as one SpecError.
A layer whose arguments or shape are wrong stops shape inference for the rest
of its model (later shapes would be guesses), but later layers' arguments are
still checked.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from . import ast, options
from .catalogue import (
    ACTIVATION_LAYERS,
    ALIASES,
    CONVERTERS,
    LAYERS,
    REQUIRED,
    TYPE_WORDS,
    LayerDef,
    LayerError,
    Symbol,
    _describe,
)
from .diagnostics import Collector, Diagnostic, SpecError, Span, suggestion
from .ir import Call, Layer, Model, Program, Train
from .parse import decode, parse, too_deep

MAX_INT = 2**62
SYMBOLIC_TYPES = ("activation", "padding", "transpose_padding")


class _Fail(Exception):
    """An error already reported; abandons the current construct."""


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
    tree = parse(text, filename)
    try:
        return _Checker(filename, text).program(tree)
    except RecursionError:  # an expression the parser could nest but evaluating cannot
        raise SpecError([too_deep(filename)], text) from None


def _int_text(shape) -> str:
    return _describe(list(shape))


class _Checker:
    def __init__(self, filename: str, source: str):
        self.filename = filename
        self.source = source
        self.out = Collector()
        self.env: dict[str, Any] = {}
        self.env_lines: dict[str, int] = {}

    def error(self, message: str, span: Span | None, hint: str | None = None) -> None:
        self.out.error(message, span, hint)

    # ------------------------------------------------------------ file

    def program(self, tree: ast.File) -> Program:
        models: dict[str, Model] = {}
        model_lines: dict[str, int] = {}
        pending_trains: list[tuple[ast.TrainDef, dict]] = []
        for item in tree.items:
            if isinstance(item, ast.Let):
                self.let(item)
            elif isinstance(item, ast.ModelDef):
                if item.name in model_lines:
                    self.error(f"model '{item.name}' is already defined on line {model_lines[item.name]}",
                               item.name_span, "model names must be unique in a file")
                    continue
                model_lines[item.name] = item.span.line
                model = self.model(item)
                if model is not None:
                    models[item.name] = model
            elif isinstance(item, ast.TrainDef):
                pending_trains.append((item, dict(self.env)))
            elif isinstance(item, ast.Import):
                self.error("`import` is reserved for a later version of specc", item.span,
                           "copy the model into this file for now")
            elif isinstance(item, ast.BlockDef):
                self.error("`block` is reserved for a later version of specc", item.span,
                           "write the layers out in the model for now")
        trains: dict[str, Train] = {}
        train_lines: dict[str, int] = {}
        for item, env in pending_trains:
            if item.name in train_lines:
                self.error(f"model '{item.name}' already has a train block on line {train_lines[item.name]}",
                           item.name_span, "merge the two train blocks")
                continue
            train_lines[item.name] = item.span.line
            if item.name not in model_lines:
                hint = suggestion(item.name, model_lines, "models") or "define `model NAME { ... }` first"
                self.error(f"train block for unknown model '{item.name}'", item.name_span, hint)
                continue
            self.env = env
            train = self.train(item, models.get(item.name))
            if train is not None:
                trains[item.name] = train
        self.out.raise_if_any(self.source)
        return Program(models, trains, self.filename, {k: v for k, v in self.env.items()
                                                        if isinstance(v, (int, float, bool, str))})

    def let(self, item: ast.Let) -> None:
        if item.name in self.env:
            self.error(f"constant '{item.name}' is already defined on line {self.env_lines[item.name]}",
                       item.name_span, "each let defines a new name once")
            return
        try:
            # `let act = relu` aliases a word; anything else must evaluate fully.
            value = Symbol(item.value.name) if isinstance(item.value, ast.Name) and item.value.name not in self.env \
                else self.eval(item.value)
        except _Fail:
            return
        self.env[item.name] = value
        self.env_lines[item.name] = item.span.line

    # ------------------------------------------------------------ expressions

    def eval(self, e: ast.Expr, symbolic: bool = False) -> Any:
        """Evaluate an expression. Bare words become Symbols where `symbolic`
        (activation=relu); elsewhere an unknown name is an error."""
        if isinstance(e, ast.Number) and not math.isfinite(e.value):  # 1e400 reads as inf
            self.error("number too large", e.span, "numbers must stay below about 1.8e308")
            raise _Fail
        if isinstance(e, (ast.Number, ast.String, ast.Bool)):
            return e.value
        if isinstance(e, ast.Name):
            if e.name in self.env:
                return self.env[e.name]
            if symbolic:
                return Symbol(e.name)
            hint = suggestion(e.name, self.env, "constants") if self.env else None
            self.error(f"unknown name '{e.name}'", e.span, hint or f"define it above with `let {e.name} = ...`")
            raise _Fail
        if isinstance(e, ast.ListExpr):
            return [self.eval(i, symbolic) for i in e.items]
        if isinstance(e, ast.Unary):
            v = self.eval(e.operand)
            self.number(v, e.operand.span, e.op)
            return -v if e.op == "-" else v
        if isinstance(e, ast.BinOp):
            a, b = self.eval(e.left), self.eval(e.right)
            self.number(a, e.left.span, e.op)
            self.number(b, e.right.span, e.op)
            return self.arith(e, a, b)
        if isinstance(e, ast.CallExpr):
            self.error(f"'{e.name}(...)' cannot be used as a value here", e.span,
                       "calls name layers in a model, or data, optimizer and schedule settings in a train block")
            raise _Fail
        raise _Fail  # pragma: no cover - every node kind is handled above

    def number(self, v: Any, span: Span, op: str) -> None:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            shown = f"'{v}'" if isinstance(v, Symbol) else repr(v) if isinstance(v, str) else str(v)
            self.error(f"'{op}' needs numbers, got {shown}", span, "arithmetic works on numbers and let constants")
            raise _Fail

    def arith(self, e: ast.BinOp, a, b):
        op = e.op
        try:
            if op in ("/", "//", "%") and b == 0:
                self.error("division by zero", e.span)
                raise _Fail
            if op == "**":
                if abs(a) > 1 and (abs(b) > 256 or abs(a) ** min(abs(b), 256) > MAX_INT):
                    self.error("number too large", e.span)
                    raise _Fail
                r = a ** b
                if isinstance(r, complex):
                    self.error("this power has no real value", e.span)
                    raise _Fail
            else:
                r = {"+": lambda: a + b, "-": lambda: a - b, "*": lambda: a * b, "/": lambda: a / b,
                     "//": lambda: a // b, "%": lambda: a % b}[op]()
        except (OverflowError, ZeroDivisionError):
            self.error("number too large", e.span)
            raise _Fail from None
        if (isinstance(r, int) and abs(r) > MAX_INT) or (isinstance(r, float) and not math.isfinite(r)):
            self.error("number too large", e.span)
            raise _Fail
        return r

    # ------------------------------------------------------------ models

    def model(self, m: ast.ModelDef) -> Model | None:
        inputs = [s for s in m.body if isinstance(s, ast.Input)]
        for s in m.body:
            if isinstance(s, ast.Residual):
                self.error("`residual` is reserved for a later version of specc", s.span,
                           "version 1 models are a plain stack of layers")
        if not inputs:
            self.error(f"model '{m.name}' has no input line", m.name_span,
                       "start the body with the shape of one sample, e.g. `input [1, 28, 28]`")
            return None
        for extra in inputs[1:]:
            self.error(f"model '{m.name}' has more than one input line", extra.span,
                       "a version 1 model has exactly one input, written first")
        ok = True
        if m.body[0] is not inputs[0]:
            self.error("input must be the first line of a model", inputs[0].span,
                       "move `input [...]` above the first layer")
            ok = False
        shape, dtype = self.input(inputs[0])
        layers_ast = [s for s in m.body if isinstance(s, ast.LayerStmt)]
        layers = self.layers(layers_ast, shape, dtype)
        if layers is None or shape is None or not ok:
            return None
        return Model(m.name, shape, tuple(layers), dtype)

    def input(self, s: ast.Input) -> tuple[tuple[int, ...] | None, str]:
        dtype = "float32"
        if s.dtype is not None:
            if s.dtype in ("int", "float"):
                dtype = "int32" if s.dtype == "int" else "float32"
            else:
                self.error(f"unknown input type '{s.dtype}'", s.dtype_span,
                           "write `input [T] int` for token ids; inputs are float otherwise")
        try:
            dims = self.eval(s.shape)
        except _Fail:
            return None, dtype
        if not dims or any(isinstance(d, bool) or not isinstance(d, int) or d <= 0 for d in dims):
            hint = ("the batch axis is implicit: write the shape of one sample, e.g. [1, 28, 28]"
                    if any(isinstance(d, Symbol) or d == -1 or d is None for d in dims) or not dims
                    else "dimensions are positive integers, channels first: [C, H, W], [T, F] or [F]")
            self.error(f"input shape must be positive integers, got {_int_text(dims)}", s.shape.span, hint)
            return None, dtype
        return tuple(dims), dtype

    def layers(self, stmts: list[ast.LayerStmt], shape, dtype) -> list[Layer] | None:
        user_names: dict[str, int] = {}
        duplicated = False
        for s in stmts:
            if s.name is None:
                continue
            if s.name in user_names:
                self.error(f"layer name '{s.name}' is already used on line {user_names[s.name]}", s.name_span,
                           "layer names must be unique in a model")
                duplicated = True
            else:
                user_names[s.name] = s.span.line
        counters: dict[str, int] = {}
        taken = set(user_names)
        layers: list[Layer] = []
        source = "the model input is"
        failed = shape is None
        for i, s in enumerate(stmts):
            d = self.layer_def(s.call)
            if d is None:
                failed = True
                continue
            name = s.name or self.auto_name(d.snake, counters, taken)
            taken.add(name)
            args = self.bind(d, s.call)
            if d.kind == "Embedding" and (i > 0 or dtype != "int32"):
                self.error("Embedding must be the first layer of a model with `input [T] int`", s.call.span,
                           "write `input [T] int` (token ids) and put Embedding right after it")
                failed = True
                continue
            if i == 0 and dtype == "int32" and d.kind != "Embedding":
                self.error(f"a model with integer input must start with Embedding, not {d.kind}", s.call.span,
                           "token ids are looked up with Embedding(vocab, dim) first")
                failed = True
            if args is None or failed:
                failed = True
                continue
            try:
                attrs, out, weights = d.build(args, shape, source)
            except LayerError as err:
                self.error(err.message, self.arg_span(s.call, d, err.arg), err.hint)
                failed = True
                continue
            layers.append(Layer(name, d.kind, attrs, shape, out, tuple(weights), s.span.line,
                                file=s.span.file, column=s.span.column))
            shape, source = out, f"{name} outputs"
        return None if failed or duplicated else layers

    @staticmethod
    def auto_name(snake: str, counters: dict[str, int], taken: set[str]) -> str:
        n = counters.get(snake, 0)
        while True:
            n += 1
            name = f"{snake}_{n}"
            if name not in taken:
                counters[snake] = n
                return name

    def layer_def(self, call: ast.CallExpr) -> LayerDef | None:
        if call.name in LAYERS and LAYERS[call.name].merge:
            form = "residual { ... }" if call.name == "Add" else "concat { branch { ... } branch { ... } }"
            self.error(f"{call.name} joins branches and is not written as a layer", call.name_span,
                       f"write {form}")
            return None
        if call.name in LAYERS:
            return LAYERS[call.name]
        if call.name in ALIASES:
            hint = f"in specc this layer is called {ALIASES[call.name]}"
        elif call.name.lower() in {a.lower() for a in ACTIVATION_LAYERS.values()} and call.name.islower():
            match = next(k for k, v in ACTIVATION_LAYERS.items() if v == call.name.lower())
            hint = f"did you mean {match}? (or activation={call.name} on the layer before)"
        else:
            hint = suggestion(call.name, LAYERS, "layers") or "layers: " + ", ".join(LAYERS)
        self.error(f"unknown layer '{call.name}'", call.name_span, hint)
        return None

    @staticmethod
    def arg_span(call: ast.CallExpr, d: LayerDef, arg: str | None) -> Span:
        if arg is None:
            return call.span
        positional = [a for a in call.args if a.name is None]
        for a in call.args:
            if a.name == arg:
                return a.span
        names = [x.name for x in d.positional]
        if arg in names and names.index(arg) < len(positional):
            return positional[names.index(arg)].span
        return call.span

    def bind(self, d: LayerDef, call: ast.CallExpr) -> dict | None:
        """Arguments to typed values by the catalogue signature; None on error."""
        given: dict[str, tuple[ast.Argument, Any]] = {}
        supplied: set[str] = set()  # written, even if its value was wrong (no "needs X" then)
        ok = True
        positional = d.positional
        seen_keyword = misplaced = False
        for k, a in enumerate(call.args):
            if a.name is None:
                if seen_keyword:
                    self.error("a positional argument cannot follow a keyword argument", a.span,
                               "put positional arguments first")
                    misplaced = True  # which argument it meant is unclear: no "needs ..." as well
                    ok = False
                    continue
                if k >= len(positional):
                    takes = ", ".join(p.name for p in positional)
                    self.error(f"{d.kind} takes {len(positional)} positional argument{'s' if len(positional) != 1 else ''}"
                               + (f" ({takes})" if takes else "") + f", got {k + 1}", a.span,
                               f"name the others: {d.signature()}")
                    ok = False
                    continue
                arg = positional[k]
            else:
                seen_keyword = True
                arg = d.arg(a.name)
                if arg is None:
                    hint = suggestion(a.name, [x.name for x in d.args], "arguments") if d.args else None
                    self.error(f"{d.kind} has no argument '{a.name}'", a.name_span or a.span,
                               hint or f"{d.kind} takes {d.signature()}")
                    ok = False
                    continue
            if arg.name in supplied:
                self.error(f"argument '{arg.name}' is given twice", a.span,
                           f"give each argument once; {d.kind} takes {d.signature()}")
                ok = False
                continue
            supplied.add(arg.name)
            try:
                value = self.eval(a.value, symbolic=arg.type in SYMBOLIC_TYPES)
            except _Fail:
                ok = False
                continue
            if isinstance(value, Symbol) and arg.type not in SYMBOLIC_TYPES:
                self.error(f"{arg.name} must be {TYPE_WORDS[arg.type]}, got '{value}'", a.span)
                ok = False
                continue
            try:
                given[arg.name] = (a, CONVERTERS[arg.type](value, arg.name))
            except LayerError as err:
                self.error(f"{d.kind}: {err.message}", a.span, err.hint)
                ok = False
        values = {}
        for arg in d.args:
            if arg.name in given:
                values[arg.name] = given[arg.name][1]
            elif arg.required:
                if arg.name not in supplied and not misplaced:
                    self.error(f"{d.kind} needs {arg.name}", call.span, f"{d.kind} takes {d.signature()}")
                ok = False
            else:
                default = arg.default
                values[arg.name] = default if default is None else CONVERTERS[arg.type](default, arg.name)
        return values if ok else None

    # ------------------------------------------------------------ train blocks

    def train(self, t: ast.TrainDef, model: Model | None) -> Train | None:
        seen: dict[str, ast.Setting] = {}
        ok = True
        for s in t.settings:
            if s.key not in options.SETTINGS:
                self.error(f"unknown train setting '{s.key}'", s.key_span,
                           suggestion(s.key, options.SETTINGS, "settings"))
                ok = False
            elif s.key in seen:
                self.error(f"'{s.key}' is set twice", s.key_span, f"first set on line {seen[s.key].span.line}")
                ok = False
            else:
                seen[s.key] = s
        for key in options.REQUIRED_SETTINGS:
            if key not in seen:
                example = {"data": "data = mnist(validation_split=0.2)", "loss": "loss = cross_entropy"}[key]
                self.error(f"train block for '{t.name}' needs {key}", t.name_span, f"add `{example}`")
                ok = False
        values: dict[str, Any] = {}
        for key, s in seen.items():
            try:
                values[key] = getattr(self, f"setting_{key}")(s)
            except _Fail:
                ok = False
        if ok and model is not None and "loss" in values:
            self.loss_fits_model(values["loss"], model, seen["loss"])
        if not ok:
            return None
        return Train(
            model=t.name,
            data=values["data"],
            loss=values["loss"],
            optimizer=values.get("optimizer", Call("adam", dict(options.OPTIMIZERS["adam"]))),
            batch=values.get("batch", options.DEFAULTS["batch"]),
            epochs=values.get("epochs", options.DEFAULTS["epochs"]),
            metrics=values.get("metrics", ()),
            seed=values.get("seed", 0),
            schedule=values.get("schedule", Call("constant", {})),
            patience=values.get("patience"),
        )

    def call_setting(self, s: ast.Setting, table: dict, what: str) -> Call:
        e = s.value
        if isinstance(e, ast.Name) and e.name not in self.env:
            e = ast.CallExpr(e.name, (), e.span, e.span)
        elif isinstance(e, ast.Name) and isinstance(self.env[e.name], Symbol):
            e = ast.CallExpr(self.env[e.name].name, (), e.span, e.span)
        if not isinstance(e, ast.CallExpr):
            self.error(f"{s.key} must be one of {', '.join(table)}", s.value.span, f"e.g. {s.key} = {next(iter(table))}()")
            raise _Fail
        if e.name not in table:
            self.error(f"unknown {what} '{e.name}'", e.name_span, suggestion(e.name, table, what + "s"))
            raise _Fail
        sig = table[e.name]
        positional = options.POSITIONAL.get(e.name, ())
        args: dict[str, Any] = {}
        ok = True
        for k, a in enumerate(e.args):
            key = a.name if a.name is not None else (positional[k] if k < len(positional) else None)
            if key is None:
                self.error(f"{e.name}() takes {len(positional)} positional argument(s)", a.span,
                           f"name it: {e.name}({', '.join(f'{n}=...' for n in sig)})")
                ok = False
                continue
            if key not in sig:
                self.error(f"{e.name}() has no argument '{key}'", a.name_span or a.span,
                           suggestion(key, sig, "arguments") or f"{e.name}() takes no arguments")
                ok = False
                continue
            if key in args:
                self.error(f"argument '{key}' is given twice", a.span)
                ok = False
                continue
            try:
                args[key] = self.typed_option(e.name, key, self.eval(a.value), sig[key], a.span)
            except _Fail:
                ok = False
        for key, default in sig.items():
            if key not in args:
                if default is REQUIRED:
                    self.error(f"{e.name}() needs {key}", e.span, f"e.g. {e.name}({key}=...)")
                    ok = False
                else:
                    args[key] = default
        if not ok:
            raise _Fail
        return Call(e.name, args)

    def typed_option(self, owner: str, key: str, value: Any, default: Any, span: Span) -> Any:
        if key == "path":
            if not isinstance(value, str):
                self.error(f"{owner}() path must be a string in double quotes", span, f'e.g. {owner}("data.npz")')
                raise _Fail
            return value
        if isinstance(default, bool):
            if not isinstance(value, bool):
                self.error(f"{key} must be true or false", span)
                raise _Fail
            return value
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.error(f"{key} must be a number", span)
            raise _Fail
        written = _describe(value)  # as the user wrote it, before int/float conversion
        if isinstance(default, int) or default is REQUIRED:
            if isinstance(value, float) and not value.is_integer():
                self.error(f"{key} must be an integer", span)
                raise _Fail
            value = int(value)
        else:
            value = float(value)
        if key == "validation_split" and not 0.0 <= value < 1.0:
            self.error(f"validation_split must be in [0, 1), got {written}", span,
                       "it is the fraction of the training data held out, e.g. validation_split=0.2")
            raise _Fail
        if key in ("lr", "epsilon", "every", "samples", "classes", "test_samples", "vocab") and value <= 0:
            self.error(f"{key} must be positive, got {written}", span)
            raise _Fail
        if key in ("momentum", "beta1", "beta2", "rho", "weight_decay", "initial_accumulator", "warmup", "factor",
                   "seed") and value < 0:
            self.error(f"{key} must not be negative, got {written}", span)
            raise _Fail
        return value

    def setting_data(self, s: ast.Setting) -> Call:
        return self.call_setting(s, options.DATASETS, "data set")

    def setting_optimizer(self, s: ast.Setting) -> Call:
        return self.call_setting(s, options.OPTIMIZERS, "optimizer")

    def setting_schedule(self, s: ast.Setting) -> Call:
        return self.call_setting(s, options.SCHEDULES, "schedule")

    def word(self, s: ast.Setting, allowed: tuple[str, ...], what: str) -> str:
        v = self.eval(s.value, symbolic=True)
        if not isinstance(v, Symbol) or v.name not in allowed:
            shown = v.name if isinstance(v, Symbol) else _describe(v)
            self.error(f"unknown {what} '{shown}'", s.value.span,
                       suggestion(shown, allowed, what + "es" if what.endswith("s") else what + "s"))
            raise _Fail
        return v.name

    def setting_loss(self, s: ast.Setting) -> str:
        return self.word(s, options.LOSSES, "loss")

    def setting_metrics(self, s: ast.Setting) -> tuple[str, ...]:
        items = s.value.items if isinstance(s.value, ast.ListExpr) else (s.value,)
        out = []
        for e in items:
            out.append(self.word(ast.Setting(s.key, e, e.span, s.key_span), options.METRICS, "metric"))
        return tuple(out)

    def positive_int(self, s: ast.Setting, allow_zero: bool = False) -> int:
        v = self.eval(s.value)
        if isinstance(v, bool) or not isinstance(v, int) or v < (0 if allow_zero else 1):
            kind = "non-negative" if allow_zero else "positive"
            self.error(f"{s.key} must be a {kind} integer, got {_describe(v)}", s.value.span)
            raise _Fail
        return v

    def setting_batch(self, s):
        return self.positive_int(s)

    def setting_epochs(self, s):
        return self.positive_int(s)

    def setting_patience(self, s):
        return self.positive_int(s)

    def setting_seed(self, s):
        return self.positive_int(s, allow_zero=True)

    def loss_fits_model(self, loss: str, model: Model, s: ast.Setting) -> None:
        final = model.final_activation
        fused = options.FUSED_ACTIVATION.get(loss)
        if fused and final not in (fused, "linear"):
            other = {"softmax": "cross_entropy", "sigmoid": "binary_cross_entropy"}.get(final)
            self.error(f"{loss} expects the model to end in {fused} (or linear logits), but '{model.name}' ends in {final}",
                       s.value.span, f"use loss = {other}" if other else f"end the model with activation={fused}")

