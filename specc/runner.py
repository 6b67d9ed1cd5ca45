"""The one training runner: `train_model` wires a recipe to the shared parts.

A recipe (specc.recipes: supervised, gan, autoencoder) owns what differs
between kinds of training: its models and backend trainers, data placement,
the step, evaluation, checkpoint groups, pictures and results. The parts
every recipe shares each live in their own module: the run directory and its
files (specc.rundir), checkpoints (specc.checkpoint: canonical weights and
optimiser state, so a run started on one backend resumes on the other), the
epoch loop (specc.loop) and progress (specc.progress). This module only
decides where a run starts (fresh or resumed), puts the parts together, and
writes the result.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

from . import backend as backends
from .checkpoint import save_checkpoint
from .distributed import World, check_batch
from .ir import Call, Model, Train
from .loop import EpochLoop, History, Outcome, Settings
from .plan import SpeedChoices
from .progress import Progress
from .recipes import Recipe, checkpoint_groups, make_recipe
from .recipes.supervised import Trainer, accuracy_kind, prepare_targets
from .rundir import (RUN_INFO, Interrupted, Resumed, RunDir, RunError, check_resume_spec, default_run_dir,
                     model_records, open_resume)

__all__ = ["Interrupted", "Options", "RunError", "RunResult", "Trainer", "accuracy_kind", "apply_overrides",
           "evaluate_weights", "prepare_targets", "sample_weights", "train_model", "RUN_INFO"]


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
    precision: str = "f32"  # f32 | mixed (bf16 compute, f32 weights, optimiser state and loss)
    speed: SpeedChoices = field(default_factory=SpeedChoices)
    devices: int = 1  # data parallel over this many local devices (torch: worker processes)
    coordinator: str | None = None  # several JAX processes: jax.distributed's HOST:PORT
    num_processes: int | None = None
    process_id: int | None = None


@dataclass
class RunResult:
    run_dir: Path
    result: dict
    history: list[dict]
    weights: dict[str, np.ndarray]  # the train block's model's (a GAN's generator)
    chief: bool = True  # False in the other processes of a data-parallel run (they wrote nothing)


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


@dataclass
class _Start:
    """Where a run starts: a new directory, or the run `--resume` continues."""

    run_dir: Path
    train: Train
    backends: list[str]
    resumed: Resumed | None = None
    note: str | None = None

    @property
    def checkpoint(self):
        return self.resumed.checkpoint if self.resumed else None


def _start(opts: Options, model: Model, train: Train, world: World, program=None, spec_path=None) -> _Start:
    from .validate import validate_out_dir

    if not opts.resume:
        run_dir = Path(opts.out) if opts.out else default_run_dir(model.name, opts.backend)
        if world.chief:  # the others would find the directory the chief has just made
            validate_out_dir(run_dir, "--out" if opts.out else "run directory")
        return _Start(run_dir, apply_overrides(train, opts), [opts.backend])
    resumed = open_resume(Path(opts.resume), model, program, spec_path)
    saved, train = resumed.saved, resumed.train
    if opts.epochs is not None:
        train = train.replace(epochs=opts.epochs)
    opts.limit, opts.data_dir = saved.get("limit"), opts.data_dir or saved.get("data_dir")
    if resumed.checkpoint is None:  # killed in its first epoch: start it again, as it was started
        note = "no epoch had completed; starting the run again from epoch 1"
    else:
        moved = f", trained so far on {saved['backend']}" if saved["backend"] != opts.backend else ""
        note = (f"resuming after epoch {resumed.checkpoint.state['epoch'] + 1} of {train.epochs} "
                f"(the last completed one){moved}")
    return _Start(Path(opts.resume), train, resumed.backends_after(opts.backend), resumed, note)


def train_model(spec_path: str, model_name: str | None, opts: Options,
                on_epoch_end: Callable[[int, dict], None] | None = None) -> RunResult:
    """Train one model of a spec file as its train block says, with overrides."""
    from . import load
    from .report import Report
    from .validate import validate_options, validate_seed

    validate_options(opts)  # before anything is read or made
    program = load(spec_path)
    if opts.resume:  # a model the run's recipe trains (a GAN's D) may be missing from this spec
        check_resume_spec(spec_path, program, opts.resume)
    model, train = _pick(program, model_name, spec_path)
    world = start_world(opts)
    start = _start(opts, model, train, world, program, spec_path)
    train = start.train
    validate_seed(train.seed)
    recipe = make_recipe(program, model, train, opts.backend, opts.device, world)
    dataset = recipe.load_data(opts.data_dir, opts.limit)
    check_batch(recipe.plan.batch, world.devices)
    if opts.precision != "f32" and opts.precision not in backends.get(opts.backend).PRECISIONS:
        raise RunError(f"--precision {opts.precision} is not available on the {opts.backend} backend yet")
    recipe.plan = replace(recipe.plan, precision=opts.precision, speed=opts.speed)
    checkpoint = start.checkpoint
    groups = checkpoint_groups(checkpoint, recipe) if checkpoint else {}
    recipe.start(groups or None)

    run_dir = RunDir(start.run_dir, writes=world.chief)
    run_info = {"spec": str(spec_path), "model": model.name, "backend": opts.backend, "backends": start.backends,
                "train": train.to_dict(), "limit": opts.limit, "data_dir": opts.data_dir, "device": opts.device,
                **world.to_dict(), "models": model_records(recipe.models())}
    run_dir.create("\n\n".join(Report.of(m).table() for m in recipe.models()), run_info, fresh=checkpoint is None)
    plan = recipe.plan
    view = Progress(opts.quiet or not world.chief, train.epochs, plan.steps_per_epoch)
    view.header(f"{model.name} on {opts.backend}: {recipe.describe()}, {len(dataset.x_train):,} training samples"
                f", batch {plan.batch}{_devices_text(world)}, {plan.optimizer.name}(lr={plan.lr:g}), "
                f"run directory {run_dir.path}")
    if start.note:
        view.note(start.note)
    speed = recipe.speed_settings()
    if speed:
        view.note(f"speed settings: {speed}")
    settings = Settings(train.epochs, plan.steps_per_epoch, plan.batch, train.seed, len(dataset.x_train),
                        opts.pull_every or max(1, min(50, plan.steps_per_epoch // 20)), train.patience)
    best = {g.removeprefix("best_"): arrays for g, arrays in groups.items() if g.startswith("best_")}
    outcome = Outcome(History.resumed(checkpoint) if checkpoint else History(), best or None)
    loop = EpochLoop(recipe, run_dir, view, settings, save_checkpoint if world.chief else _no_save, run_info,
                     on_epoch_end)
    with view, _interrupt_hint(spec_path, model.name, opts.backend, run_dir.path):
        loop.run(checkpoint.state["epoch"] + 1 if checkpoint else 0, outcome)
    return _finish(recipe, outcome, run_dir, view, opts, spec_path, start.backends, len(dataset.x_train), world)


def check_launch(spec_path: str, model_name: str | None, opts: Options) -> None:
    """What can be checked before worker processes start, so that a mistake
    is reported once rather than by every worker: the flags, the spec and
    the global batch against the number of devices."""
    from . import load
    from .validate import validate_options

    validate_options(opts)
    program = load(spec_path)
    if opts.resume:  # the batch is the resumed run's; each worker checks it
        check_resume_spec(spec_path, program, opts.resume)
        model, _ = _pick(program, model_name, spec_path)
        open_resume(Path(opts.resume), model, program, spec_path)  # the same models, once, not in every worker
        return
    model, train = _pick(program, model_name, spec_path)
    check_batch(apply_overrides(train, opts).batch, opts.devices)


def start_world(opts: Options) -> World:
    """This process's place in the run, the backend's distributed runtime
    started (before any trainer or data is made)."""
    return backends.get(opts.backend).start_world(devices=opts.devices, device=opts.device,
                                                   coordinator=opts.coordinator, num_processes=opts.num_processes,
                                                   process_id=opts.process_id)


def _devices_text(world: World) -> str:
    if not world.parallel:
        return ""
    per = f" in {world.processes} processes" if world.processes > 1 else ""
    return f" split over {world.devices} devices{per}"


def _no_save(*args, **kwargs) -> None:
    """Checkpoints of a data-parallel run are the chief's to write."""


def _finish(recipe: Recipe, outcome: Outcome, run_dir: RunDir, view: Progress, opts: Options, spec_path: str,
            backends_used: list[str], train_samples: int, world: World) -> RunResult:
    """The recipe's final evaluation, the weights and result.json."""
    if outcome.best is not None and outcome.stopped_early:
        recipe.set_weights(outcome.best)
    recipe_result = recipe.final_result(run_dir.path)
    weights = recipe.save_weights(run_dir.path, opts.backend)
    rows = outcome.history.rows
    result = {
        "backend": opts.backend,
        "backends": backends_used,  # in the order they trained it (a resumed run may change backend)
        "model": recipe.model.name,
        "spec": str(spec_path),
        "params": recipe.model.params,
        "epochs": len(rows),
        "batch": recipe.plan.batch,
        "optimizer": recipe.train.optimizer.to_dict(),
        **recipe_result,
        "train_samples": train_samples,
        "train_seconds": round(sum(row["seconds"] for row in rows), 3),  # resumed runs: all epochs
        "train_samples_per_second": outcome.samples_per_second,
        # validation, checkpoints, metric rows and pictures, as a share of the epochs' time (this session)
        "epoch_overhead_fraction": outcome.overhead_fraction,
        "stopped_early": outcome.stopped_early,
        "device": opts.device,
        "precision": opts.precision,
        "speed_settings": recipe.speed_settings(),
        **world.to_dict(),
    }
    run_dir.write_result(result)
    note = run_dir.plot_curves()
    if note:
        view.note(note)
    view.result(recipe.headline(result), result, run_dir.path)
    return RunResult(run_dir.path, result, rows, weights, world.chief)


def evaluate_weights(spec_path: str, model_name: str | None, weights_path: str, backend: str,
                     data_dir: str | None = None, device: str = "cpu", batch: int | None = None) -> dict:
    """The test figures of saved canonical weights, on any backend, as the
    train block's recipe measures them (test loss and accuracy; a GAN's scores)."""
    from . import load
    from .validate import validate_choices, validate_data_dir

    validate_choices(backend, device)
    validate_data_dir(data_dir)
    program = load(spec_path)
    model, train = _pick(program, model_name, spec_path)
    return make_recipe(program, model, train, backend, device).evaluate_saved(weights_path, data_dir, batch)


def sample_weights(spec_path: str, model_name: str | None, weights_path: str, n: int = 64,
                   out: str = "samples.png", backend: str = "jax", seed: int | None = None) -> Path:
    """A PNG grid of `n` samples from saved generator weights (`specc sample`);
    the seed defaults to the train block's, which redraws a run's samples.png."""
    from . import load
    from .recipes.gan import draw_samples
    from .validate import validate_sample_options
    from .weights import fit_weights, load_weights

    validate_sample_options(n, seed, out, backend, "cpu")
    program = load(spec_path)
    model = _pick_generator(program, model_name, spec_path)
    train = program.trains.get(model.name)
    weights = fit_weights(model, load_weights(weights_path), weights_path)
    seed = seed if seed is not None else (train.seed if train is not None else 0)
    return draw_samples(model, train, weights, n, Path(out), backend, seed)


def _pick_generator(program, model_name: str | None, spec_path: str) -> Model:
    """--model, else the generator of the file's one gan train block."""
    if model_name is not None:
        if model_name not in program.models:
            from .diagnostics import suggestion

            hint = suggestion(model_name, program.models, "models")
            raise RunError(f"{spec_path} has no model '{model_name}'" + (f"; {hint}" if hint else ""))
        return program.models[model_name]
    gans = [name for name, t in program.trains.items() if t.recipe is not None and t.recipe.name == "gan"]
    if len(gans) != 1:
        raise RunError(f"{spec_path} has {'no' if not gans else 'several'} gan train block{'s' if gans else ''}; "
                       "name the generator with --model")
    return program.models[gans[0]]


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


@contextlib.contextmanager
def _interrupt_hint(spec_path, model: str, backend: str, run_dir: Path):
    try:
        yield
    except KeyboardInterrupt:
        raise Interrupted(f"interrupted; continue from the last completed epoch (saved in {run_dir}) with:\n"
                          f"  specc train {spec_path} --model {model} --backend {backend} --resume {run_dir}") from None
