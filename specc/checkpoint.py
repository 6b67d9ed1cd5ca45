"""Checkpoints of a run directory: what a run needs to go on after it stops.

A checkpoint is a folder `checkpoint-NNNN` (NNNN: the completed epochs) with
named groups of canonical arrays, one safetensors file each (for example
`weights`, `optimizer`, `best_weights`), and `state.json`, the loop's JSON
state. `checkpoint.json` in the run directory names the latest one. Saving is
atomic: a temporary folder, renamed into place, then the pointer replaced, and
only then the previous checkpoint removed, so a run killed at any moment
leaves a complete checkpoint behind.

This module knows nothing of recipes, trainers or backends: the caller says
which groups to save and, on loading, which shapes they must have. Every
problem in a checkpoint is a `CheckpointError` naming the damaged file and
saying what can be done. No pickle: safetensors and JSON only.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

from .errors import UserError
from .weights import load_weights

POINTER = "checkpoint.json"
STATE = "state.json"
_FOLDER = re.compile(r"checkpoint-\d{4,}")

Arrays = dict[str, np.ndarray]


class CheckpointError(UserError):
    """A run directory or checkpoint that cannot be resumed from."""


@dataclass(frozen=True)
class Checkpoint:
    folder: Path
    state: dict[str, Any]
    groups: dict[str, Arrays]

    def file(self, group: str) -> Path:
        return self.folder / f"{group}.safetensors"

    def check(self, group: str, shapes: Mapping[str, tuple[int, ...]], what: str) -> Arrays:
        """The group's arrays, refused unless they are exactly `shapes`' keys
        with those shapes (`what` says what they should be, for the message)."""
        arrays = self.groups.get(group)
        if arrays is None:
            raise damaged(self.file(group), "is missing")
        problem = _shape_problem(arrays, shapes) or _value_problem(arrays)
        if problem:
            raise damaged(self.file(group), f"does not hold {what}: {problem}")
        return arrays


def save_checkpoint(run_dir: Path, epoch: int, groups: Mapping[str, Mapping[str, np.ndarray]],
                    state: Mapping[str, Any]) -> Path:
    """Save the checkpoint of completed epoch `epoch` (0-based) atomically and
    remove the previous one; returns its folder."""
    name = f"checkpoint-{epoch + 1:04d}"
    tmp = run_dir / f".{name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for group, arrays in groups.items():
        _save_group(tmp / f"{group}.safetensors", arrays)
    full_state = {**state, "epoch": epoch, "groups": sorted(groups)}
    (tmp / STATE).write_text(json.dumps(full_state, indent=2))
    final = run_dir / name
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    write_atomic(run_dir / POINTER, json.dumps({"latest": name, "epoch": epoch}))
    for old in run_dir.glob("checkpoint-*"):
        if old.name != name:
            shutil.rmtree(old, ignore_errors=True)
    return final


def load_checkpoint(run_dir: Path, required_state: Iterable[str] = ()) -> Checkpoint | None:
    """The latest checkpoint of `run_dir`, every file read and checked; None
    when the run has none yet (it stopped before completing an epoch).
    `required_state` are keys state.json must have."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"no such run directory: {run_dir}" if not run_dir.exists()
                              else f"{run_dir} is not a directory",
                              "--resume takes the run directory that specc train wrote (--out, or runs/...)")
    pointer = run_dir / POINTER
    if not pointer.exists():
        return None
    folder = run_dir / _latest(pointer)
    if not folder.is_dir():
        raise damaged(pointer, f"names {folder.name}, which does not exist")
    state = _read_state(folder / STATE, tuple(required_state))
    groups = {group: _read_group(folder / f"{group}.safetensors") for group in state["groups"]}
    return Checkpoint(folder, state, groups)


def _save_group(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    """Floats as float32 (canonical), integers (step counts) as they are;
    scalars stay scalars."""
    from safetensors.numpy import save_file

    save_file({key: np.array(value, dtype=np.float32 if np.asarray(value).dtype.kind == "f" else None, order="C")
               for key, value in arrays.items()}, str(path))


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


# ---------------------------------------------------------------- reading, every failure named


def _latest(pointer: Path) -> str:
    latest = read_json(pointer)
    latest = latest.get("latest") if isinstance(latest, dict) else None
    if not isinstance(latest, str) or not _FOLDER.fullmatch(latest):
        raise damaged(pointer, f"does not name a checkpoint folder (latest: {latest!r})")
    return latest


def _read_state(path: Path, required: tuple[str, ...]) -> dict:
    if not path.is_file():
        raise damaged(path, "is missing")
    state = read_json(path)
    if not isinstance(state, dict):
        raise damaged(path, "does not hold a JSON object")
    # Checkpoints written before groups were listed hold weights and optimizer.
    state.setdefault("groups", sorted(f.stem for f in path.parent.glob("*.safetensors")))
    missing = [key for key in ("epoch", *required) if key not in state]
    if missing:
        raise damaged(path, f"lacks {', '.join(missing)}")
    groups = state["groups"]
    names_ok = isinstance(groups, list) and all(isinstance(g, str) and re.fullmatch(r"\w+", g) for g in groups)
    if not isinstance(state["epoch"], int) or state["epoch"] < 0 or not names_ok:
        raise damaged(path, "has a malformed epoch or group list")
    return state


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_bytes())
    except OSError as err:
        raise damaged(path, f"cannot be read ({err.strerror or err})") from None
    except ValueError as err:  # JSONDecodeError, UnicodeDecodeError
        raise damaged(path, f"is not valid JSON ({_why(err)})") from None


def _read_group(path: Path) -> Arrays:
    if not path.is_file():
        raise damaged(path, "is not a file" if path.exists() else "is missing")
    try:
        return load_weights(path)
    except UserError as err:  # specc.weights names the file and the damage
        raise damaged(path, f"cannot be read: {_without(err.message, path)}") from None
    except Exception as err:  # noqa: BLE001 - safetensors reports damage in its own error types
        raise damaged(path, f"is not a readable safetensors file ({_why(err)})") from None


def _shape_problem(arrays: Mapping[str, np.ndarray], shapes: Mapping[str, tuple[int, ...]]) -> str | None:
    """The first key at fault; a key that should not be there first, as it
    tells another model, optimiser or format best."""
    unexpected = [key for key in arrays if key not in shapes]
    if unexpected:
        return f"it has an unexpected {unexpected[0]}"
    for key, shape in shapes.items():
        if key not in arrays:
            return f"it has no {key}"
        if tuple(np.shape(arrays[key])) != tuple(shape):
            return f"{key} has shape {list(np.shape(arrays[key]))}, expected {list(shape)}"
    return None


def _value_problem(arrays: Mapping[str, np.ndarray]) -> str | None:
    """The first array whose values no run saves: weights and moments are
    finite floats, step counts non-negative integers. A trainer would carry a
    NaN on and blame the learning rate, or fail on a negative step."""
    for key, array in arrays.items():
        kind = array.dtype.kind
        if kind not in "fiu" and array.dtype.name != "bfloat16":
            return f"{key} holds {array.dtype} values, not numbers"
        if kind == "i" and array.size and array.min() < 0:
            return f"{key} holds a negative count ({array.min()})"
        with np.errstate(over="ignore"):  # a float64 beyond float32 becomes inf: damage, said below
            finite = kind in "iu" or np.isfinite(np.asarray(array, np.float32)).all()
        if not finite:
            return f"{key} holds NaN or infinite values"
    return None


# ---------------------------------------------------------------- messages


def damaged(path: Path, problem: str) -> CheckpointError:
    """`path <problem>`, and what can be done: resume from another complete
    checkpoint when there is one, else start the run again."""
    in_checkpoint = _FOLDER.fullmatch(path.parent.name) is not None
    run_dir = path.parent.parent if in_checkpoint else path.parent
    bad_folder = path.parent if in_checkpoint else None
    others = [f for f in sorted(run_dir.glob("checkpoint-*"), reverse=True)
              if f.is_dir() and f != bad_folder and _FOLDER.fullmatch(f.name) and (f / STATE).is_file()]
    if others:
        hint = (f"to resume from {others[0].name}, the newest complete checkpoint left, write "
                f"{{\"latest\": \"{others[0].name}\"}} into {run_dir / POINTER}; or start a new run with --out NEW_DIR")
    else:
        hint = "this run cannot be resumed; start it again as a new run (specc train ... --out NEW_DIR)"
    return CheckpointError(f"cannot resume from {run_dir}: {path} {problem}", hint)


def _why(err: Exception) -> str:
    return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__


def _without(message: str, path: Path) -> str:
    """specc.weights' message without the file name, which ours already gives."""
    return message.removeprefix(f"{path}: ").removeprefix(f"{path} ")
