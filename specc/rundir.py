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

from .checkpoint import POINTER, STATE, Checkpoint, damaged, load_checkpoint, read_json, write_atomic
from .errors import UserError
from .ir import Model, Train

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


def open_resume(run_dir: Path, model: Model) -> Resumed:
    """The run to continue; a damaged file is named, with what can be done."""
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
    return Resumed(resume, saved, train)
