"""The one training runner: loop, data, metrics, progress, logging, checkpoints.

A backend supplies only a `Trainer` (compiled train and eval steps, weight and
optimiser-state conversion); everything else lives here, once, for every
backend. The loop talks to a `Recipe`, not to the trainer directly, so
multi-model recipes (a GAN's alternating steps, an autoencoder's reconstruction
target) and data parallelism plug in without rewriting the loop.

The hot loop never waits for the device per step: the trainer accumulates
loss, accuracy (when `metrics` asks for it) and the first non-finite step on
the device, and the runner reads them (`pull`) only every `pull_every` steps,
for the progress bar.

Checkpoints (specc.checkpoint) hold canonical weights and canonical optimiser
state (specc.plan.optimizer_state_shapes), so a run started on one backend
resumes on the other.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

import numpy as np

from . import backend as backends
from . import data as datasets
from .checkpoint import POINTER, STATE, Checkpoint, damaged, load_checkpoint, read_json, save_checkpoint, write_atomic
from .errors import UserError
from .ir import Call, Model, Train
from .plan import make_plan, optimizer_state_shapes
from .weights import init_weights, load_weights, save_weights

RUN_INFO = "run.json"  # how the run was started, written before its first step


class RunError(UserError):
    """A problem the user can fix (bad resume directory, no train block, ...)."""


class Interrupted(RunError):
    """Ctrl-C during training; the message says how to resume."""


class Trainer(Protocol):
    """What a backend's `trainer(model, plan, weights, device)` returns."""

    def put(self, x: np.ndarray, y: np.ndarray) -> Any: ...  # a whole split, moved to the device once
    def begin_epoch(self, data: Any, order: np.ndarray, epoch: int) -> None: ...
    def step(self, i: int) -> None: ...  # batch i of the epoch's order; asynchronous
    def pull(self) -> dict: ...  # sync: loss, accuracy (None unless asked), samples, bad_step (-1: none), bad_value
    def evaluate(self, data: Any, batch: int) -> dict: ...  # inference mode: loss, accuracy
    def get_weights(self) -> dict[str, np.ndarray]: ...
    def set_weights(self, weights: dict[str, np.ndarray]) -> None: ...
    def get_optimizer_state(self) -> dict[str, np.ndarray]: ...  # canonical: "<opt>/<slot>/<weight key>", "<opt>/step"
    def set_optimizer_state(self, state: dict[str, np.ndarray]) -> None: ...  # RunError naming a key that does not fit


@dataclass
class Options:
    """Command-line choices; `None` keeps the train block's value."""

    backend: str = "jax"
    epochs: int | None = None
    batch: int | None = None
    lr: float | None = None
    seed: int | None = None
    out: str | None = None
    data_dir: str | None = None
    device: str = "cpu"
    limit: int | None = None
    quiet: bool = False
    resume: str | None = None
    pull_every: int | None = None


@dataclass
class History:
    rows: list[dict] = field(default_factory=list)
    best_val_loss: float = math.inf
    best_epoch: int = -1
    bad_epochs: int = 0


def apply_overrides(train: Train, opts: Options) -> Train:
    changes: dict[str, Any] = {}
    if opts.epochs is not None:
        changes["epochs"] = opts.epochs
    if opts.batch is not None:
        changes["batch"] = opts.batch
    if opts.seed is not None:
        changes["seed"] = opts.seed
    if opts.lr is not None:
        changes["optimizer"] = Call(train.optimizer.name, {**train.optimizer.args, "lr": float(opts.lr)})
    return train.replace(**changes) if changes else train


# ---------------------------------------------------------------- recipes


class SupervisedRecipe:
    """x -> y with one model: classifiers and regressors. An autoencoder is the
    same recipe with y = x; a GAN is a recipe holding two trainers."""

    def __init__(self, trainer: Trainer):
        self.trainer = trainer

    def begin_epoch(self, data, order, epoch):
        self.trainer.begin_epoch(data, order, epoch)

    def step(self, i: int) -> None:
        self.trainer.step(i)

    def pull(self) -> dict:
        return self.trainer.pull()

    def evaluate(self, data, batch: int) -> dict:
        return self.trainer.evaluate(data, batch)

    def checkpoint(self) -> dict[str, dict[str, np.ndarray]]:
        """The canonical arrays a checkpoint holds for this recipe."""
        return {"weights": self.trainer.get_weights(), "optimizer": self.trainer.get_optimizer_state()}

    def restore(self, groups: dict[str, dict[str, np.ndarray]]) -> None:
        """The rest of a checkpoint (the trainer was made with its weights)."""
        self.trainer.set_optimizer_state(groups["optimizer"])


def prepare_targets(model: Model, train: Train, y: np.ndarray) -> np.ndarray:
    """Targets in the form the loss wants: class ids stay ids for the
    cross-entropies; for mse/mae, ids become one-hot rows when the model
    outputs one score per class."""
    if y is None:
        return y
    if train.loss in ("mse", "mae") and np.issubdtype(y.dtype, np.integer) and len(model.output_shape) == 1:
        classes = model.output_shape[0]
        return np.eye(classes, dtype=np.float32)[y] if classes > 1 else y.astype(np.float32)[:, None]
    if train.loss == "binary_cross_entropy":
        return y.astype(np.float32).reshape(len(y), *model.output_shape)
    return y


def accuracy_kind(model: Model, train: Train, y: np.ndarray) -> str | None:
    if train.loss == "cross_entropy":
        return "categorical"
    if train.loss == "binary_cross_entropy":
        return "binary"
    if np.issubdtype(y.dtype, np.integer) and len(model.output_shape) == 1:
        return "onehot"
    return None


# ---------------------------------------------------------------- the run


@dataclass
class RunResult:
    run_dir: Path
    result: dict
    history: list[dict]
    weights: dict[str, np.ndarray]


def default_run_dir(model: str, backend: str) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = Path("runs") / f"{model}-{backend}-{stamp}"
    n = 1
    while path.exists():
        n += 1
        path = Path("runs") / f"{model}-{backend}-{stamp}-{n}"
    return path


def train_model(spec_path: str, model_name: str | None, opts: Options,
                on_epoch_end: Callable[[int, dict], None] | None = None) -> RunResult:
    """Train one model of a spec file as its train block says, with overrides."""
    from . import load
    from .report import Report
    from .validate import validate_dataset, validate_options, validate_out_dir, validate_seed

    validate_options(opts)  # before anything is read or made
    program = load(spec_path)
    model, train = _pick(program, model_name, spec_path)
    resume = restart_note = None
    backends_used = [opts.backend]
    if opts.resume:
        run_dir = Path(opts.resume)
        resume, saved, train = _open_resume(run_dir, model)
        if resume is None:  # killed in its first epoch: start it again, as it was started
            restart_note = "no epoch had completed; starting the run again from epoch 1"
        backends_used = _backends_after(saved, opts.backend)
        if opts.epochs is not None:
            train = train.replace(epochs=opts.epochs)
        opts.limit, opts.data_dir = saved.get("limit"), opts.data_dir or saved.get("data_dir")
    else:
        train = apply_overrides(train, opts)
        run_dir = Path(opts.out) if opts.out else default_run_dir(model.name, opts.backend)
        validate_out_dir(run_dir, "--out" if opts.out else "run directory")
    validate_seed(train.seed)

    dataset = datasets.load_dataset(train.data, model.input_shape, model.input_dtype,
                                    data_dir=opts.data_dir, limit=opts.limit)
    validate_dataset(dataset, model, train)  # before a backend sees the data
    y_train = prepare_targets(model, train, dataset.y_train)
    y_val = prepare_targets(model, train, dataset.y_val)
    y_test = prepare_targets(model, train, dataset.y_test)
    n_train = len(dataset.x_train)
    plan = make_plan(model, train, n_train, accuracy_kind(model, train, dataset.y_train))

    be = backends.get(opts.backend)
    resumed = _resumed_groups(resume, model, train) if resume else {}
    weights = resumed["weights"] if resume else init_weights(model, train.seed)
    trainer = be.trainer(model, plan, weights, device=opts.device)
    recipe = SupervisedRecipe(trainer)
    if resume:
        recipe.restore(resumed)
    train_data = trainer.put(dataset.x_train, y_train)
    val_data = trainer.put(dataset.x_val, y_val) if dataset.x_val is not None else None
    test_data = trainer.put(dataset.x_test, y_test)

    # Made only now, so that bad data or a missing device leaves no empty run behind.
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "summary.txt").write_text(Report.of(model).table() + "\n")
    run_info = {"spec": str(spec_path), "model": model.name, "backend": opts.backend, "backends": backends_used,
                "train": train.to_dict(), "limit": opts.limit, "data_dir": opts.data_dir, "device": opts.device}
    history = _resumed_history(resume) if resume else History()
    start_epoch = resume.state["epoch"] + 1 if resume else 0
    if not resume:
        write_atomic(run_dir / RUN_INFO, json.dumps(run_info, indent=2))
        (run_dir / "metrics.jsonl").write_text("")

    view = _Progress(opts.quiet, model.name, opts.backend, train.epochs, plan.steps_per_epoch)
    view.header(model, plan, dataset, run_dir)
    if restart_note:
        view.note(restart_note)
    elif resume:
        moved = f", trained so far on {saved['backend']}" if saved["backend"] != opts.backend else ""
        view.note(f"resuming after epoch {start_epoch} of {train.epochs} (the last completed one){moved}")
    pull_every = opts.pull_every or max(1, min(50, plan.steps_per_epoch // 20))
    warmup_steps = min(5, plan.steps_per_epoch)
    timed_seconds, timed_samples = 0.0, 0
    stopped_early = False
    best_weights = resumed.get("best_weights")  # early stopping's best so far, kept across a resume

    with view, _interrupt_hint(spec_path, model.name, opts.backend, run_dir):
        for epoch in range(start_epoch, train.epochs):
            order = datasets.batch_order(n_train, plan.batch, train.seed, epoch)
            started = time.perf_counter()
            recipe.begin_epoch(train_data, order, epoch)
            sums = {"loss": 0.0, "accuracy": 0.0, "samples": 0}
            # Throughput is timed between pulls (each pull waits for the device),
            # leaving out the run's first steps, which compile.
            mark = time.perf_counter() if epoch > start_epoch else None
            mark_samples = 0
            for i in range(plan.steps_per_epoch):
                recipe.step(i)
                warm = epoch == start_epoch and i == warmup_steps - 1
                if warm or i == plan.steps_per_epoch - 1 or (i + 1) % pull_every == 0:
                    m = recipe.pull()
                    now = time.perf_counter()
                    if m.get("bad_step", -1) >= 0:
                        bad = int(m["bad_step"])
                        kept = (f"the last good checkpoint (epoch {epoch}) is kept in {run_dir}" if epoch > 0
                                else "no epoch completed, so there is no checkpoint")
                        raise RunError(
                            f"the loss became {m.get('bad_value', 'NaN')} at epoch {epoch + 1}, step "
                            f"{bad - epoch * plan.steps_per_epoch + 1} (global step {bad + 1}); "
                            f"stopped; {kept}; try a smaller learning rate (--lr)")
                    _accumulate(sums, m)
                    if mark is not None:
                        timed_seconds += now - mark
                        timed_samples += sums["samples"] - mark_samples
                    mark, mark_samples = now, sums["samples"]
                    rate = timed_samples / timed_seconds if timed_seconds > 0 else 0.0
                    view.step(epoch, i + 1, sums["loss"] / max(sums["samples"], 1), rate)
            epoch_seconds = time.perf_counter() - started
            row = {"epoch": epoch + 1, "loss": sums["loss"] / max(sums["samples"], 1)}
            if plan.accuracy is not None:
                row["accuracy"] = sums["accuracy"] / max(sums["samples"], 1)
            if val_data is not None:
                val = recipe.evaluate(val_data, plan.batch)
                row["val_loss"] = val["loss"]
                if plan.accuracy is not None:
                    row["val_accuracy"] = val["accuracy"]
            row["seconds"] = round(epoch_seconds, 3)
            row["samples_per_second"] = round(sums["samples"] / epoch_seconds, 1)
            history.rows.append(row)
            with (run_dir / "metrics.jsonl").open("a") as fh:
                fh.write(json.dumps(row) + "\n")
            view.epoch(row)

            monitored = row.get("val_loss", row["loss"])
            if monitored < history.best_val_loss:
                history.best_val_loss, history.best_epoch, history.bad_epochs = monitored, epoch, 0
                if train.patience:
                    best_weights = trainer.get_weights()
            else:
                history.bad_epochs += 1
            groups = recipe.checkpoint() | ({"best_weights": best_weights} if best_weights is not None else {})
            save_checkpoint(run_dir, epoch, groups, {"history": history.__dict__, "run": run_info})
            if on_epoch_end is not None:
                on_epoch_end(epoch, row)
            if train.patience and history.bad_epochs >= train.patience:
                view.note(f"early stopping: no improvement in {'val_loss' if val_data is not None else 'loss'} "
                          f"for {train.patience} epochs; keeping the weights of epoch {history.best_epoch + 1}")
                stopped_early = True
                break

    if best_weights is not None and stopped_early:
        trainer.set_weights(best_weights)
    test = recipe.evaluate(test_data, plan.batch)
    final_weights = trainer.get_weights()
    save_weights(run_dir / "weights.safetensors", final_weights, {"model": model.name, "backend": opts.backend})
    result = {
        "backend": opts.backend,
        "backends": backends_used,  # in the order they trained it (a resumed run may change backend)
        "model": model.name,
        "spec": str(spec_path),
        "params": model.params,
        "epochs": len(history.rows),
        "batch": plan.batch,
        "optimizer": train.optimizer.to_dict(),
        "test_loss": test["loss"],
        "test_accuracy": test.get("accuracy"),
        "train_samples": n_train,
        "train_seconds": round(sum(row["seconds"] for row in history.rows), 3),  # resumed runs: all epochs
        "train_samples_per_second": round(timed_samples / timed_seconds, 1) if timed_seconds > 0 else None,
        "stopped_early": stopped_early,
        "device": opts.device,
    }
    write_atomic(run_dir / "result.json", json.dumps(result, indent=2))
    _plot_quietly(run_dir, view)
    view.result(result, run_dir)
    return RunResult(run_dir, result, history.rows, final_weights)


def evaluate_weights(spec_path: str, model_name: str | None, weights_path: str, backend: str,
                     data_dir: str | None = None, device: str = "cpu", batch: int | None = None) -> dict:
    """Test loss and accuracy of saved canonical weights, on any backend."""
    from . import load
    from .validate import validate_choices, validate_data_dir, validate_dataset
    from .weights import fit_weights

    validate_choices(backend, device)
    validate_data_dir(data_dir)
    program = load(spec_path)
    model, train = _pick(program, model_name, spec_path)
    weights = fit_weights(model, load_weights(weights_path), weights_path)
    dataset = datasets.load_dataset(train.data, model.input_shape, model.input_dtype, data_dir=data_dir)
    validate_dataset(dataset, model, train)
    y_test = prepare_targets(model, train, dataset.y_test)
    plan = make_plan(model, train, len(dataset.x_train), accuracy_kind(model, train, dataset.y_test))
    trainer = backends.get(backend).trainer(model, plan, weights, device=device)
    result = trainer.evaluate(trainer.put(dataset.x_test, y_test), batch or train.batch)
    return {"backend": backend, "model": model.name, "test_loss": result["loss"],
            "test_accuracy": result.get("accuracy"), "test_samples": len(dataset.x_test)}


def _pick(program, model_name: str | None, spec_path: str) -> tuple[Model, Train]:
    trained = list(program.trains)
    if model_name is None:
        if len(trained) == 1:
            model_name = trained[0]
        elif not trained:
            raise RunError(f"{spec_path} has no train block; add `train MODEL {{ ... }}` (see specs/lenet.spec)")
        else:
            raise RunError(f"{spec_path} has train blocks for {', '.join(trained)}; choose one with --model")
    if model_name not in program.models:
        from .diagnostics import suggestion

        hint = suggestion(model_name, program.models, "models")
        raise RunError(f"{spec_path} has no model '{model_name}'" + (f"; {hint}" if hint else ""))
    if model_name not in program.trains:
        raise RunError(f"model '{model_name}' has no train block in {spec_path}; add `train {model_name} {{ ... }}`")
    return program.models[model_name], program.trains[model_name]


# ---------------------------------------------------------------- resuming


def _open_resume(run_dir: Path, model: Model) -> tuple[Checkpoint | None, dict, Train]:
    """The run to continue: its latest checkpoint (None when no epoch had
    completed), how it was last run, and its train block. A damaged file is
    named, with what can be done."""
    resume = load_checkpoint(run_dir, required_state=("history", "run"))
    if resume is None:
        source = run_dir / RUN_INFO
        if not source.is_file():
            raise RunError(f"{run_dir} is not a specc run directory: it has neither {POINTER} nor {RUN_INFO}",
                           "--resume takes the run directory that specc train wrote (--out, or runs/...)")
        saved = read_json(source)
    else:
        source, saved = resume.folder / STATE, resume.state["run"]
    try:
        train = Train.from_dict(saved["train"])
        backends_used = saved.get("backends", [])
        names = [saved["model"], saved["backend"], *(backends_used if isinstance(backends_used, list) else [None])]
        if not all(isinstance(name, str) for name in names):
            raise TypeError("model and backends must be names")
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise damaged(source, f"does not describe a specc run ({type(err).__name__}: {err})") from None
    if saved["model"] != model.name:
        raise RunError(f"{run_dir} is a run of model {saved['model']}, not {model.name}",
                       f"resume it with --model {saved['model']}, or give another run directory")
    return resume, saved, train


def _backends_after(saved: dict, backend: str) -> list[str]:
    """The backends that trained a run, in order, once `backend` goes on with
    it: checkpoints are canonical, so any backend continues where another stopped."""
    used = list(saved.get("backends") or [saved["backend"]])
    return used if used[-1] == backend else [*used, backend]


def _resumed_groups(resume: Checkpoint, model: Model, train: Train) -> dict[str, dict[str, np.ndarray]]:
    """The checkpoint's arrays, each group checked against this model and
    optimiser before a trainer sees them."""
    weights = {key: w.shape for key, w in model.weight_specs().items()}
    what = f"the weights of model {model.name}"
    groups = {"weights": resume.check("weights", weights, what),
              "optimizer": resume.check("optimizer", optimizer_state_shapes(model, train.optimizer),
                                        f"the {train.optimizer.name} optimiser state of model {model.name}")}
    if "best_weights" in resume.groups:
        groups["best_weights"] = resume.check("best_weights", weights, what)
    return groups


def _resumed_history(resume: Checkpoint) -> History:
    try:
        return History(**resume.state["history"])
    except TypeError as err:
        raise damaged(resume.folder / STATE, f"holds a malformed history ({err})") from None


@contextlib.contextmanager
def _interrupt_hint(spec_path, model: str, backend: str, run_dir: Path):
    try:
        yield
    except KeyboardInterrupt:
        raise Interrupted(f"interrupted; continue from the last completed epoch (saved in {run_dir}) with:\n"
                          f"  specc train {spec_path} --model {model} --backend {backend} --resume {run_dir}") from None


def _accumulate(sums: dict, m: dict) -> None:
    n = int(m["samples"])
    sums["loss"] += float(m["loss"]) * n
    sums["accuracy"] += float(m.get("accuracy") or 0.0) * n
    sums["samples"] += n


def _plot_quietly(run_dir: Path, view) -> None:
    try:
        from .plot import plot_runs

        plot_runs([run_dir], run_dir / "curves.png")
    except ImportError:
        view.note("curves.png not written: install matplotlib (pip install 'specc[plot]')")


# ---------------------------------------------------------------- what the user sees


class _Progress:
    """A rich progress bar (epoch, step, loss, samples/s, ETA) and a row per epoch."""

    def __init__(self, quiet: bool, model: str, backend: str, epochs: int, steps: int):
        self.quiet = quiet
        self.epochs, self.steps = epochs, steps
        self.model, self.backend = model, backend
        if quiet:
            return
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.console = Console(highlight=False, soft_wrap=True)  # log lines stay whole when piped
        self.progress = Progress(
            TextColumn("epoch {task.fields[epoch]}/{task.fields[epochs]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]:.4f}"),
            TextColumn("{task.fields[rate]:,.0f} samples/s"),
            TimeRemainingColumn(),
            console=self.console,
            transient=True,
        )
        self.task = None

    def __enter__(self):
        if not self.quiet:
            self.progress.__enter__()
        return self

    def __exit__(self, *exc):
        if not self.quiet:
            self.progress.__exit__(*exc)

    def header(self, model, plan, dataset, run_dir) -> None:
        if self.quiet:
            return
        self.console.print(f"[bold]specc train[/] {model.name} on {self.backend}: {model.params:,} params, "
                           f"{len(dataset.x_train):,} training samples, batch {plan.batch}, "
                           f"{plan.optimizer.name}(lr={plan.lr:g}), run directory {run_dir}")

    def step(self, epoch: int, step: int, loss: float, rate: float) -> None:
        if self.quiet:
            return
        if self.task is None:
            self.task = self.progress.add_task("train", total=self.steps, epoch=epoch + 1, epochs=self.epochs,
                                               loss=loss, rate=rate)
        self.progress.update(self.task, completed=step, epoch=epoch + 1, loss=loss, rate=rate)

    def epoch(self, row: dict) -> None:
        if self.quiet:
            return
        if self.task is not None:
            self.progress.reset(self.task, total=self.steps)
        parts = [f"epoch {row['epoch']:>3}/{self.epochs}", f"loss {row['loss']:.4f}"]
        for key in ("accuracy", "val_loss", "val_accuracy"):
            if key in row:
                parts.append(f"{key} {row[key]:.4f}")
        parts.append(f"{row['seconds']:.1f}s")
        parts.append(f"{row['samples_per_second']:,.0f} samples/s")
        self.console.print("  ".join(parts))

    def note(self, text: str) -> None:
        if not self.quiet:
            self.console.print(text)

    def result(self, result: dict, run_dir: Path) -> None:
        if self.quiet:
            return
        acc = result.get("test_accuracy")
        acc_text = f", test accuracy {acc:.4f}" if acc is not None else ""
        rate = result.get("train_samples_per_second")
        rate_text = f", {rate:,.0f} samples/s" if rate else ""
        self.console.print(f"[bold]done[/]: test loss {result['test_loss']:.4f}{acc_text}; "
                           f"{result['train_seconds']:.1f}s training{rate_text}; saved in {run_dir}")
