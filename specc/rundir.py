"""The run directory and its files, and the run's user errors.

A run directory holds `run.json` (how the run was started, written before its
first step), `summary.txt`, `metrics.jsonl` (one row per epoch), the latest
checkpoint (specc.checkpoint), and at the end `result.json`, the weights and
`curves.png`. Recipes add their own pictures (`samples/`, ...) through
`RunDir.path`. This module knows how these files are named, made and read
back for `--resume`; it knows nothing of trainers or recipes.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .checkpoint import POINTER, STATE, Checkpoint, damaged, load_checkpoint, read_json, write_atomic
from .errors import UserError
from .fingerprint import canonical, difference, fingerprint
from .ir import Model, Train
from .options import ARG_TYPES, FUSED_ACTIVATION, saved_train_problem

RUN_INFO = "run.json"
METRICS = "metrics.jsonl"
RESULT = "result.json"
SUMMARY = "summary.txt"
WEIGHTS = "weights.safetensors"
CURVES = "curves.png"


class RunError(UserError):
    """A problem the user can fix (bad resume directory, no train block, ...)."""


class Interrupted(RunError):
    """Ctrl-C during training; the message says how to resume."""


def default_run_dir(model: str, backend: str) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = Path("runs") / f"{model}-{backend}-{stamp}"
    n = 1
    while path.exists():
        n += 1
        path = Path("runs") / f"{model}-{backend}-{stamp}-{n}"
    return path


@dataclass
class RunDir:
    """The files of one run directory. In a data-parallel run only the chief
    process writes them (`writes` False elsewhere: every write is skipped)."""

    path: Path
    writes: bool = True

    def create(self, summary: str, run_info: dict, fresh: bool) -> None:
        """Made only once data and device are ready, so that a run that never
        starts leaves nothing behind; a resumed run keeps its files."""
        if not self.writes:
            return
        self.path.mkdir(parents=True, exist_ok=True)
        (self.path / SUMMARY).write_text(summary + "\n")
        if fresh:
            write_atomic(self.path / RUN_INFO, json.dumps(run_info, indent=2))
            (self.path / METRICS).write_text("")

    def append_row(self, row: dict) -> None:
        if not self.writes:
            return
        with (self.path / METRICS).open("a") as fh:
            fh.write(json.dumps(row) + "\n")

    def write_result(self, result: dict) -> None:
        if self.writes:
            write_atomic(self.path / RESULT, json.dumps(result, indent=2))

    def plot_curves(self) -> str | None:
        """Draw curves.png; a note for the user when matplotlib is missing."""
        if not self.writes:
            return None
        try:
            from .plot import plot_runs

            plot_runs([self.path], self.path / CURVES)
        except ImportError:
            return f"{CURVES} not written: install matplotlib (pip install 'specc[plot]')"
        return None


# ---------------------------------------------------------------- resuming


@dataclass
class Resumed:
    """What `--resume DIR` continues: the latest checkpoint (None when no
    epoch had completed), how the run was last started, and its train block."""

    checkpoint: Checkpoint | None
    saved: dict
    train: Train

    def backends_after(self, backend: str) -> list[str]:
        """The backends that trained the run, in order, once `backend` goes on
        with it: checkpoints are canonical, so any backend continues where
        another stopped."""
        used = list(self.saved.get("backends") or [self.saved["backend"]])
        return used if used[-1] == backend else [*used, backend]


def open_resume(run_dir: Path, model: Model, program: Any = None, spec_path: str | None = None) -> Resumed:
    """The run to continue; a damaged file is named, with what can be done.
    The spec's models (`model`, and the others the run's recipe trains, from
    `program`) must be the ones the run trained: the same fingerprint."""
    resume = load_checkpoint(run_dir, required_state=("history", "run"))
    if resume is None:
        source = run_dir / RUN_INFO
        if not source.is_file():
            raise RunError(f"{run_dir} is not a specc run directory: it has neither {POINTER} nor {RUN_INFO}",
                           "--resume takes the run directory that specc train wrote (--out, or runs/...)")
        saved = read_json(source)
    else:
        source, saved = resume.folder / STATE, resume.state["run"]
    train = _saved_train(source, saved)
    if resume is not None:
        _check_history(resume)
    _check_metrics(run_dir / METRICS)
    if saved["model"] != model.name:
        raise RunError(f"{run_dir} is a run of model {saved['model']}, not {model.name}",
                       f"resume it with --model {saved['model']}, or give another run directory")
    _check_fingerprints(run_dir, source, saved, trained_models(program, model, train), spec_path)
    _check_model(run_dir, saved, train, model)
    return Resumed(resume, saved, train)


def _saved_train(source: Path, saved: Any) -> Train:
    """The train block a run was started with, as the checker would pass it."""
    try:
        train = Train.from_dict(saved["train"])
        backends_used = saved.get("backends", [])
        names = [saved["model"], saved["backend"], *(backends_used if isinstance(backends_used, list) else [None])]
        if not all(isinstance(name, str) for name in names):
            raise TypeError("model and backends must be names")
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise damaged(source, f"does not describe a specc run ({type(err).__name__}: {err})") from None
    problem = saved_train_problem(train)
    if problem:
        raise damaged(source, f"does not describe a specc run (its train block: {problem})")
    return train


def trained_models(program: Any, model: Model, train: Train) -> tuple[Model, ...]:
    """The models a run of `train` trains: `model`, and those its recipe names
    (a GAN's discriminator), as far as `program` has them."""
    named = [value for key, value in (train.recipe.args.items() if train.recipe is not None else ())
             if ARG_TYPES.get(key) == "model"]
    models = getattr(program, "models", {})
    return (model, *(models[name] for name in named if name in models and name != model.name))


def model_records(models) -> dict:
    """run.json's "models": each model's fingerprint and canonical IR (specc.fingerprint)."""
    from .fingerprint import record

    return {m.name: record(m) for m in models}


def _check_fingerprints(run_dir: Path, source: Path, saved: dict, models: tuple[Model, ...],
                        spec_path: str | None) -> None:
    """Every model the run trained is the spec's model of that name, to the
    last attribute. A run made before fingerprints (no "models") is left to
    the older checks: the weight shapes and the loss's final activation."""
    kept = saved.get("models")
    if kept is None:
        return
    if not isinstance(kept, dict) or not all(isinstance(v, dict) and isinstance(v.get("fingerprint"), str)
                                             for v in kept.values()):
        raise damaged(source, "does not describe a specc run (its models are not fingerprints)")
    for model in models:
        entry = kept.get(model.name)
        if entry is None:
            raise damaged(source, f"does not describe a specc run (it has no fingerprint of model {model.name})")
        if entry["fingerprint"] == fingerprint(model):
            continue
        what = difference(entry.get("ir"), canonical(model)) or "its IR differs from the run's"
        where = f" in {spec_path}" if spec_path else ""
        raise RunError(f"cannot resume {run_dir}: model {model.name}{where} is not the model the run trained: {what}",
                       f"resume with the spec the run was started with ({saved.get('spec')}) as it was then, "
                       "or train the changed model as a new run (without --resume)")


def _check_model(run_dir: Path, saved: dict, train: Train, model: Model) -> None:
    """A model of the same name and weight shapes can still be another model:
    one whose final activation the run's loss was never checked against."""
    fused = FUSED_ACTIVATION.get(train.loss)
    trains_output = train.recipe is None or train.recipe.name == "autoencoder"
    if fused and trains_output and model.final_activation not in (fused, "linear"):
        raise RunError(f"{run_dir} trained model {model.name} with {train.loss}, which needs it to end in {fused}, "
                       f"but this spec's {model.name} ends in {model.final_activation}: not the model the run trained",
                       f"resume with the spec the run was started with ({saved.get('spec')})")


def saved_run_info(run_dir: str | Path) -> dict | None:
    """How the run in `run_dir` was last started (the latest checkpoint's, else
    run.json), or None when it cannot be read: reads only the run's JSON,
    and anything damaged is left for open_resume to name."""
    run_dir = Path(run_dir)
    try:
        pointer = read_json(run_dir / POINTER) if (run_dir / POINTER).is_file() else None
        if isinstance(pointer, dict) and isinstance(pointer.get("latest"), str):
            saved = read_json(run_dir / pointer["latest"] / STATE)["run"]
        else:
            saved = read_json(run_dir / RUN_INFO)
    except (UserError, KeyError, TypeError, ValueError, AttributeError, OSError):
        return None
    return saved if isinstance(saved, dict) else None


def check_resume_spec(spec_path: str, program: Any, run_dir: str | Path) -> None:
    """The models a resumed run's recipe names (a GAN's discriminator) are in
    the spec it is resumed with. Reads only the run's JSON: anything damaged
    is left for open_resume to name."""
    run_dir = Path(run_dir)
    saved = saved_run_info(run_dir)
    try:
        recipe = Train.from_dict(saved["train"]).recipe
        named = {key: value for key, value in recipe.args.items() if ARG_TYPES.get(key) == "model"} if recipe else {}
    except (UserError, KeyError, TypeError, ValueError, AttributeError):
        return
    for key, name in named.items():
        if name not in program.models:
            raise RunError(f"{run_dir} trains {saved.get('model')} with {recipe.name}({key}={name}), but {spec_path} "
                           f"has no model '{name}'",
                           f"resume with the spec the run was started with ({saved.get('spec')})")


def _check_history(checkpoint: Checkpoint) -> None:
    """The loop goes on after the checkpoint's epoch with its history: the two
    must agree, or the resumed run would skip epochs or report wrong ones."""
    history, epoch = checkpoint.state["history"], checkpoint.state["epoch"]
    rows = history.get("rows") if isinstance(history, dict) else None
    if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
        raise damaged(checkpoint.folder / STATE, "holds a malformed history (its rows are not a list of objects)")
    if len(rows) != epoch + 1:
        raise damaged(checkpoint.folder / STATE, f"says epoch {epoch + 1} was the last completed, but its history "
                                                 f"holds {len(rows)} epoch{'s' if len(rows) != 1 else ''}")


def _check_metrics(path: Path) -> None:
    """The rows the resumed run appends to, and curves.png is drawn from."""
    if path.exists():  # else made again by the resumed run
        try:
            read_metrics(path)
        except RunError as err:
            raise RunError(f"cannot resume: {err.message}", "fix or delete that line (the checkpoint keeps every "
                                                            "epoch's figures), or start a new run with --out NEW_DIR")


def read_metrics(path: Path) -> list[dict]:
    """metrics.jsonl's rows, each with a numeric epoch and loss (a GAN's:
    d_loss and g_loss); damage is a RunError naming the line."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise RunError(f"{path}: cannot read ({getattr(err, 'strerror', None) or err})") from None
    rows = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            raise RunError(f"{path} line {number} is not valid JSON: the run's metrics are damaged") from None
        numeric = isinstance(row, dict) and (_numbers(row, "epoch", "loss") or _numbers(row, "epoch", "d_loss", "g_loss"))
        if not numeric:
            raise RunError(f"{path} line {number} has no numeric epoch and loss: the run's metrics are damaged")
        rows.append(row)
    return rows


def _numbers(row: dict, *keys: str) -> bool:
    return all(isinstance(row.get(k), (int, float)) and not isinstance(row.get(k), bool) for k in keys)


def check_plot_runs(run_dirs: list[Any], out: Any) -> None:
    """Each run directory has readable metrics rows and, when finished, a
    result naming its model and backend; the picture can be written."""
    from .validate import validate_picture_out

    for run_dir in map(Path, run_dirs):
        if not run_dir.is_dir():
            raise RunError(f"{run_dir}: no such run directory")
        if not (run_dir / METRICS).is_file():
            raise RunError(f"{run_dir} is not a run directory (no {METRICS})")
        read_metrics(run_dir / METRICS)
        result = run_dir / RESULT
        if result.is_file():
            try:
                info = json.loads(result.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                info = None
            if not isinstance(info, dict) or not {"model", "backend"} <= set(info):
                raise RunError(f"{result}: not a readable run result (needs model and backend)")
    validate_picture_out(out)
