"""One validation layer for run-time inputs: data, command-line values, run
directories and plot inputs.

Everything a user feeds to `specc train`, `eval` or `plot` besides the spec is
checked here, in numpy, before a backend sees it and before a run directory
is made, so a mistake ends in one `UserError` naming the file, the array (or
flag) and the first offending index and value, never in a framework's
traceback or a silently wrong run. Weight files are checked in specc.weights.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from .data import DataError, Dataset
from .errors import UserError
from .ir import INPUT, Model, Train
from .plan import PRECISIONS

SEED_MAX = 2**63 - 1  # the largest seed both frameworks take (jax.random.key needs a C long)
# What makes a directory a run: refusing --out on any of these keeps an old run whole.
RUN_FILES = ("run.json", "checkpoint.json", "result.json", "metrics.jsonl", "weights.safetensors")
LABELS_MISFIT = "the labels do not fit the model"


class OptionError(UserError):
    """A command-line value out of range (the same ranges as a train block)."""


class RunDirError(UserError):
    """A run directory that cannot be used as asked."""


# ---------------------------------------------------------------- command-line values


def _shown(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return str(value) if isinstance(value, int) else repr(value)


def _int_option(flag: str, value: Any, minimum: int) -> None:
    if value is None:
        return
    kind = "positive" if minimum == 1 else "non-negative"
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise OptionError(f"{flag} must be a {kind} integer, got {_shown(value)}")


def validate_seed(seed: Any, flag: str = "seed") -> None:
    """Non-negative, and small enough for both frameworks' generators."""
    _int_option(flag, seed, 0)
    if seed is not None and seed > SEED_MAX:
        raise OptionError(f"{flag} must be at most 2**63 - 1, got {seed}")


def validate_lr(lr: Any, flag: str = "--lr") -> None:
    if lr is None:
        return
    if isinstance(lr, (bool, np.bool_)) or not isinstance(lr, (int, float, np.number)):
        raise OptionError(f"{flag} must be a number, got {_shown(lr)}")
    if not math.isfinite(lr):
        raise OptionError(f"{flag} must be a finite number, got {_shown(float(lr))}")
    if lr <= 0:
        raise OptionError(f"{flag} must be positive, got {_shown(float(lr))}")


def validate_choices(backend: str, device: str) -> None:
    from .backend import BACKENDS

    if backend not in BACKENDS:
        raise OptionError(f"--backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if device not in ("cpu", "gpu"):
        raise OptionError(f"--device must be cpu or gpu, got {device!r}")


def validate_data_dir(data_dir: Any) -> None:
    if data_dir is None:
        return
    path = Path(data_dir).expanduser()
    if not path.exists():
        raise OptionError(f"--data-dir {data_dir}: no such directory")
    if not path.is_dir():
        raise OptionError(f"--data-dir {data_dir} is a file, not a directory",
                          "give the directory that holds the data files")


def validate_options(opts: Any) -> None:
    """The command-line values of `specc train` (a runner.Options), checked with
    the train block's ranges and wording, the flag named."""
    for key in ("epochs", "batch", "limit"):
        _int_option(f"--{key}", getattr(opts, key), 1)
    _int_option("pull_every", getattr(opts, "pull_every", None), 1)
    validate_seed(opts.seed, "--seed")
    validate_lr(opts.lr)
    validate_choices(opts.backend, opts.device)
    for flag, value in (("--out", opts.out), ("--resume", opts.resume), ("--data-dir", opts.data_dir)):
        if value == "":  # would silently mean "no flag" (a new run, runs/...) below
            raise OptionError(f"{flag} needs a directory, got ''")
    validate_data_dir(opts.data_dir)
    if opts.resume:
        validate_resume_dir(opts.resume)
    if opts.resume and opts.out and not _same_directory(opts.out, opts.resume):
        raise OptionError("--out and --resume cannot be used together",
                          "a resumed run continues in its own directory: drop --out")
    kept = [f"--{key}" for key in ("batch", "lr", "seed", "limit")
            if opts.resume and getattr(opts, key) is not None and not _as_started(opts.resume, key, getattr(opts, key))]
    if kept:  # the runner takes these from the run: given here they would be ignored silently
        raise OptionError(f"{kept[0]} cannot change a resumed run: it goes on with the values it was started with",
                          f"drop {kept[0]} (with --resume, --epochs may grow the run), or start a new run")
    validate_parallel(opts)
    precision = getattr(opts, "precision", "f32")
    if precision not in PRECISIONS:
        raise OptionError(f"--precision must be one of {', '.join(PRECISIONS)}, got {_shown(precision)}")


def _as_started(run_dir: Any, key: str, value: Any) -> bool:
    """`--key value` is what the run in `run_dir` was started with (the
    original command run again with --resume): harmless, so accepted."""
    from .rundir import saved_run_info

    saved = saved_run_info(run_dir)
    try:
        train = saved["train"]
        was = {"batch": lambda: train["batch"], "seed": lambda: train["seed"], "limit": lambda: saved["limit"],
               "lr": lambda: train["optimizer"]["args"]["lr"]}[key]()
    except (KeyError, TypeError, IndexError):
        return False
    if isinstance(was, bool) or not isinstance(was, (int, float)) or isinstance(value, bool):
        return False
    return float(was) == float(value) if key == "lr" else was == value


def _same_directory(out: Any, resume: Any) -> bool:
    """--out names the directory --resume continues (the original command run
    again with --resume): `run`, `./run/` or a link to it alike."""
    try:
        return Path(out).exists() and os.path.samefile(out, resume)
    except OSError:
        return False


def validate_parallel(opts: Any) -> None:
    """--devices, and the flags of a several-process JAX run."""
    _int_option("--devices", getattr(opts, "devices", 1), 1)
    flags = {"--coordinator": getattr(opts, "coordinator", None),
             "--num-processes": getattr(opts, "num_processes", None),
             "--process-id": getattr(opts, "process_id", None)}
    given = [flag for flag, value in flags.items() if value is not None]
    if not given:
        return
    if opts.backend != "jax":
        raise OptionError(f"{given[0]} is for jax.distributed (--backend jax)",
                          "several torch processes are started by torchrun: "
                          "torchrun --nnodes N --nproc-per-node M --rdzv-endpoint HOST:PORT -m specc train ...")
    missing = [flag for flag, value in flags.items() if value is None]
    if missing:
        raise OptionError(f"{given[0]} needs {' and '.join(missing)} too",
                          "a several-process jax run names the coordinator, the number of processes and "
                          "this process's index: --coordinator HOST:PORT --num-processes P --process-id I")
    _int_option("--num-processes", flags["--num-processes"], 1)
    _int_option("--process-id", flags["--process-id"], 0)
    if flags["--process-id"] >= flags["--num-processes"]:
        raise OptionError(f"--process-id {flags['--process-id']} is not below --num-processes "
                          f"{flags['--num-processes']}", "process ids count from 0")
    host, _, port = str(flags["--coordinator"]).rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise OptionError(f"--coordinator {flags['--coordinator']} is not HOST:PORT",
                          "e.g. --coordinator 10.0.0.1:1234")


# ---------------------------------------------------------------- run directories


def validate_resume_dir(path: Any) -> None:
    p = Path(path)
    hint = "give the run directory that `specc train` printed (runs/<model>-<backend>-<time>)"
    if not p.exists():
        raise RunDirError(f"--resume {path}: no such directory", hint)
    if not p.is_dir():
        raise RunDirError(f"--resume {path} is a file, not a run directory", hint)


def _held_run_file(path: Path) -> str | None:
    for name in RUN_FILES:
        if (path / name).exists():
            return name
    return next((p.name for p in sorted(path.glob("checkpoint-*"))), None)


def validate_out_dir(path: Path, what: str = "--out") -> None:
    """Refuse a run directory that would overwrite something: a file, a path
    through a file, a directory holding another run, or one we cannot write."""
    if path.exists() and not path.is_dir():
        raise RunDirError(f"{what} {path} is a file, not a directory", "choose another --out")
    existing = path if path.exists() else next((p for p in path.parents if p.exists()), Path("."))
    if existing.exists() and not existing.is_dir():
        raise RunDirError(f"{what} {path}: {existing} is a file, not a directory", "choose another --out")
    if path.is_dir():
        held = _held_run_file(path)
        if held:
            raise RunDirError(f"{what} {path} already holds a run ({held})",
                              f"use --resume {path} to continue it, or another --out")
    if existing.exists() and not os.access(existing, os.W_OK | os.X_OK):
        raise RunDirError(f"{what} {path}: cannot write in {existing} (permission denied)", "choose another --out")


# ---------------------------------------------------------------- data against the model


def _index(mask: np.ndarray) -> tuple[int, ...]:
    """The first True of a boolean array, in C order."""
    return tuple(int(i) for i in np.unravel_index(int(np.argmax(mask)), mask.shape))


def _at(name: str, index: tuple[int, ...]) -> str:
    return f"{name}[{', '.join(map(str, index))}]"


def _value(array: np.ndarray, index: tuple[int, ...]) -> str:
    v = array[index]
    if array.dtype.kind == "f":
        return "nan" if math.isnan(v) else f"{float(v):g}"
    return str(v.item() if hasattr(v, "item") else v)


def _shape(shape: tuple[int, ...], batch: str | None = None) -> str:
    dims = ([batch] if batch else []) + [str(d) for d in shape]
    return f"[{', '.join(dims)}]"


def _source(dataset: Dataset, train: Train) -> str:
    """How messages name the data: the file for npz, else the data set."""
    if train.data.name == "npz" and dataset.source:
        return dataset.source
    return dataset.name


def _check_finite(where: str, name: str, array: np.ndarray, what: str) -> None:
    if array.dtype.kind != "f" or array.size == 0 or (np.isfinite(array.min()) and np.isfinite(array.max())):
        return  # min and max carry any NaN or inf, without a full-size mask
    index = _index(~np.isfinite(array))
    raise DataError(f"{where}: {_at(name, index)} is {_value(array, index)}, but {what}")


def _check_x(where: str, name: str, x: np.ndarray, model: Model) -> None:
    if x.dtype.kind not in "biuf":
        raise DataError(f"{where}: {name} holds {x.dtype} values, not numbers")
    if x.shape[1:] != tuple(model.input_shape):
        raise DataError(f"{where}: {name} has shape {_shape(x.shape)}, but model '{model.name}' takes "
                        f"{_shape(model.input_shape, 'N')}")
    _check_finite(where, name, x, "inputs must be finite numbers")
    for layer in model.consumers(INPUT):
        if layer.kind == "Embedding":
            vocab = int(layer.attrs["vocab"])
            bad = (x < 0) | (x >= vocab) | (x != np.floor(x))
            if bad.any():
                index = _index(bad)
                raise DataError(f"{where}: {_at(name, index)} is {_value(x, index)}, but {layer.name} embeds token "
                                f"ids in [0, {vocab}): the inputs do not fit the model",
                                f"use synthetic(vocab={vocab})" if where == "synthetic" else None)


def _label_hint(where: str, classes: int, top: int) -> str | None:
    if where == "synthetic":
        return f"make synthetic(classes=...) at most {classes}, or give the model's last layer more units"
    if where == "mnist":
        return "MNIST has 10 classes: end the model in Dense(10, ...)"
    if top >= classes:
        return f"the labels go up to {top}: give the model's last layer {top + 1} units, or fix the labels"
    return "class ids count from 0"


def _ids_in_range(where: str, name: str, y: np.ndarray, classes: int, model: Model, need: str) -> None:
    if y.min() >= 0 and y.max() < classes:
        return
    index = _index((y < 0) | (y >= classes))
    raise DataError(f"{where}: {_at(name, index)} is {_value(y, index)}, but model '{model.name}' has {classes} "
                    f"outputs: {LABELS_MISFIT} ({need})", _label_hint(where, classes, int(y.max())))


def _class_ids(where: str, name: str, y: np.ndarray, model: Model, loss: str) -> None:
    classes, per_sample = model.output_shape[-1], tuple(model.output_shape[:-1])
    if y.dtype.kind == "f":  # whole-number floats are ids (Keras's sparse cross-entropy casts them too)
        fractional = y != np.floor(y)
        if fractional.any():
            shown = f"{_at(name, _index(fractional))} is {_value(y, _index(fractional))}"
            raise DataError(f"{where}: {shown}, but {loss} needs integer class ids: {LABELS_MISFIT}",
                            "store class ids as integers (y.astype(int)); one-hot rows become ids with y.argmax(-1)")
    if y.shape[1:] not in (per_sample, per_sample + (1,)):  # a column of ids is flattened, as Keras does
        what = "a class id per sample" if not per_sample else "a class id per time step"
        raise DataError(f"{where}: {name} has shape {_shape(y.shape)}, but model '{model.name}' outputs "
                        f"{_shape(model.output_shape, 'N')}, so {loss} needs {what}, shape "
                        f"{_shape(per_sample, 'N')} (or {_shape(per_sample + (1,), 'N')}): {LABELS_MISFIT}",
                        "one-hot rows become ids with y.argmax(-1)" if y.shape[1:] == tuple(model.output_shape)
                        else None)
    _ids_in_range(where, name, y, classes, model, f"{loss} needs class ids in [0, {classes})")


def _squeezed(shape) -> tuple[int, ...]:
    return tuple(d for d in shape if d != 1)


def _binary_targets(where: str, name: str, y: np.ndarray, model: Model, loss: str) -> None:
    if _squeezed(y.shape[1:]) != _squeezed(model.output_shape):
        raise DataError(f"{where}: {name} has shape {_shape(y.shape)}, but model '{model.name}' outputs "
                        f"{_shape(model.output_shape, 'N')}: {LABELS_MISFIT} ({loss} needs one target per output)")
    if y.min() < 0 or y.max() > 1:
        index = _index((y < 0) | (y > 1))
        raise DataError(f"{where}: {_at(name, index)} is {_value(y, index)}, but {loss} needs targets in [0, 1]: "
                        f"{LABELS_MISFIT}", "binary targets are 0 or 1 (or probabilities between them)")


def _regression_targets(where: str, name: str, y: np.ndarray, model: Model, loss: str) -> None:
    out = tuple(model.output_shape)
    if y.dtype.kind in "biu" and len(out) == 1:  # class ids, one-hot encoded by the runner
        if y.ndim != 1:
            raise DataError(f"{where}: {name} holds integers of shape {_shape(y.shape)}, but {loss} on integer "
                            f"class ids needs one id per sample, shape [N]: {LABELS_MISFIT}",
                            "store one-hot rows or regression targets as floats (y.astype('float32'))")
        if out[0] > 1:
            _ids_in_range(where, name, y, out[0], model,
                          f"{loss} one-hot encodes class ids, so it needs ids in [0, {out[0]})")
        return
    if y.shape[1:] != out:
        raise DataError(f"{where}: {name} has shape {_shape(y.shape)}, but model '{model.name}' outputs "
                        f"{_shape(out, 'N')}: {LABELS_MISFIT} ({loss} needs targets of the output's shape)",
                        f"reshape them: y.reshape(len(y), {', '.join(map(str, out))})")


_TARGET_CHECKS = {"cross_entropy": _class_ids, "binary_cross_entropy": _binary_targets}


def _check_y(where: str, name: str, y: np.ndarray, model: Model, loss: str) -> None:
    if y.dtype.kind not in "biuf":
        raise DataError(f"{where}: {name} holds {y.dtype} values, not numbers: {LABELS_MISFIT}")
    if y.ndim == 0:
        raise DataError(f"{where}: {name} is a single value, not one entry per sample: {LABELS_MISFIT}")
    _check_finite(where, name, y, f"labels must be finite numbers: {LABELS_MISFIT}")
    _TARGET_CHECKS.get(loss, _regression_targets)(where, name, y, model, loss)


def _splits(dataset: Dataset) -> list[tuple[str, Any, Any]]:
    splits = [("train", dataset.x_train, dataset.y_train)]
    if dataset.x_val is not None or dataset.y_val is not None:
        splits.append(("val", dataset.x_val, dataset.y_val))
    return splits + [("test", dataset.x_test, dataset.y_test)]


def validate_dataset(dataset: Dataset, model: Model, train: Train) -> None:
    """Every split's inputs and labels against the model and the loss; raises
    DataError naming the data, the array and the first bad index and value."""
    where = _source(dataset, train)
    for split, x, y in _splits(dataset):
        for name, array in ((f"x_{split}", x), (f"y_{split}", y)):
            if not isinstance(array, np.ndarray):
                raise DataError(f"{where}: missing array '{name}'")
        if x.ndim == 0 or len(x) == 0:
            raise DataError(f"{where}: x_{split} has no samples")
        if y.ndim and len(y) != len(x):
            raise DataError(f"{where}: 'y_{split}' has {len(y)} entries, but 'x_{split}' has {len(x)}: {LABELS_MISFIT}")
        _check_x(where, f"x_{split}", x, model)
        _check_y(where, f"y_{split}", y, model, train.loss)


def validate_inputs(dataset: Dataset, model: Model, train: Train) -> None:
    """Every split's inputs against the model, for recipes that use no labels
    (an autoencoder's target is its input; a GAN's data are the real samples
    its discriminator takes)."""
    where = _source(dataset, train)
    for split, x, _ in _splits(dataset):
        if not isinstance(x, np.ndarray):
            raise DataError(f"{where}: missing array 'x_{split}'")
        if x.ndim == 0 or len(x) == 0:
            raise DataError(f"{where}: x_{split} has no samples")
        _check_x(where, f"x_{split}", x, model)


# ---------------------------------------------------------------- pictures (plot runs: specc.rundir)


def validate_picture_out(out: Any, flag: str = "--out") -> None:
    """A PNG can be written at `out`: not a directory, in one that exists."""
    target = Path(out)
    if target.is_dir():
        raise RunDirError(f"{flag} {out} is a directory; name the PNG to write, e.g. {flag} picture.png")
    if not target.parent.is_dir():
        raise RunDirError(f"{flag} {out}: no such directory {target.parent}")


def validate_sample_options(n: Any, seed: Any, out: Any, backend: str, device: str) -> None:
    """The values of `specc sample`, checked before anything is read."""
    _int_option("-n", n, 1)
    validate_seed(seed, "--seed")
    validate_choices(backend, device)
    validate_picture_out(out, "-o")
