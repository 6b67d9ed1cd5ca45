"""Recipes: what the runner's loop talks to, one per kind of training.

A recipe owns everything that differs between kinds of training: which
models and trainers it holds (built through the backend registry), how the
data is loaded, checked and placed on the device, one step, what is pulled
for progress, how a split is evaluated, which weights and optimiser states go
into a checkpoint, and which metrics, pictures and results it writes. The
loop (specc.loop), the run directory (specc.rundir), checkpoints
(specc.checkpoint) and progress (specc.progress) are shared by every recipe.

A train block without `recipe = ...` is supervised; `gan(D, latent=N)` and
`autoencoder(noise=s)` name the others (specc.options.RECIPES).
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Protocol

import numpy as np

from ..checkpoint import Checkpoint
from ..data import Dataset
from ..distributed import SINGLE, World
from ..ir import Model, Program, Train
from ..plan import Plan

Arrays = dict[str, np.ndarray]
Groups = dict[str, Arrays]  # checkpoint group -> canonical arrays

# recipe name -> (module of this package, class): one explicit table.
RECIPES = {"supervised": ("supervised", "SupervisedRecipe"),
           "autoencoder": ("autoencoder", "AutoencoderRecipe"),
           "gan": ("gan", "GanRecipe")}


class Recipe(Protocol):
    name: str
    model: Model  # the train block's model: its weights are the run's weights.safetensors
    train: Train
    plan: Plan  # made by load_data
    metrics: tuple[str, ...]  # pulled each step; their epoch means are the row's first columns
    progress_metrics: tuple[str, ...]  # the ones the progress bar shows
    monitor: str | None  # the metric early stopping watches (its val_ form when validating); None: never
    weight_groups: tuple[str, ...]  # the checkpoint groups that are weights (early stopping keeps their best)
    world: World  # data parallelism: every process calls every method in the same order; the chief writes

    def models(self) -> tuple[Model, ...]: ...  # every model it trains (summary.txt, the header)
    def describe(self) -> str: ...  # "1,256,080 params": the header's words on the models
    def load_data(self, data_dir: str | None, limit: int | None) -> Dataset: ...  # loaded, checked; makes plan
    def checkpoint_shapes(self) -> dict[str, tuple[dict, str]]: ...  # group -> (key -> shape, what it holds)
    def start(self, groups: Groups | None) -> None: ...  # trainers from initial or checkpointed arrays; data placed
    def begin_epoch(self, order: np.ndarray, epoch: int) -> None: ...
    def step(self, i: int) -> None: ...  # asynchronous: never waits for the device
    def pull(self) -> dict: ...  # metric means since the last pull, samples, bad_step (-1: none), bad_value
    def evaluate(self, split: str) -> dict | None: ...  # metric -> value on "val"/"test"; None without the split
    def speed_settings(self) -> str: ...  # the trainer's speed and precision settings in words (after start)
    def checkpoint(self) -> Groups: ...
    def weights(self) -> Groups: ...  # the weight groups only
    def set_weights(self, groups: Groups) -> None: ...
    def end_epoch(self, epoch: int, run_dir: Path) -> list[str]: ...  # pictures; notes for the user
    def final_result(self, run_dir: Path) -> dict: ...  # result.json's recipe part (test loss, scores)
    def headline(self, result: dict) -> dict: ...  # label -> value for the closing line
    def save_weights(self, run_dir: Path, backend: str) -> Arrays: ...  # the files; returns the model's weights
    def evaluate_saved(self, weights_path: str, data_dir: str | None, batch: int | None) -> dict: ...


def recipe_name(train: Train) -> str:
    return train.recipe.name if train.recipe is not None else "supervised"


def make_recipe(program: Program, model: Model, train: Train, backend: str, device: str = "cpu",
                world: World = SINGLE) -> Recipe:
    """The recipe of a checked train block (its model `model`, from `program`)."""
    module, cls = RECIPES[recipe_name(train)]
    return getattr(importlib.import_module(f"{__name__}.{module}"), cls)(program, model, train, backend, device, world)


def checkpoint_groups(checkpoint: Checkpoint, recipe: Recipe) -> Groups:
    """The checkpoint's arrays, each group checked against the recipe's models
    and optimisers before a trainer sees them; early stopping's best weights
    (`best_<group>`) too, when the checkpoint has them."""
    shapes = recipe.checkpoint_shapes()
    groups = {group: checkpoint.check(group, keys, what) for group, (keys, what) in shapes.items()}
    for group in recipe.weight_groups:
        if f"best_{group}" in checkpoint.groups:
            keys, what = shapes[group]
            groups[f"best_{group}"] = checkpoint.check(f"best_{group}", keys, what)
    return groups


def weight_shapes(model: Model) -> dict[str, tuple[int, ...]]:
    return {key: w.shape for key, w in model.weight_specs().items()}


def params_text(model: Model) -> str:
    return f"{model.params:,} params"



# ---------------------------------------------------------------- pictures, shared by the recipes that draw


SAMPLES_DIR = "samples"  # samples/epoch-001.png, ... one picture per epoch


def epoch_picture(run_dir: Path, epoch: int) -> Path:
    return run_dir / SAMPLES_DIR / f"epoch-{epoch + 1:03d}.png"


def data_range(train: Train) -> tuple[float, float]:
    """The range of the data's values: mnist(range=[lo, hi]), else [0, 1]."""
    low, high = train.data.args.get("range") or (0.0, 1.0)
    return float(low), float(high)


def image_shape(shape) -> tuple[int, ...] | None:
    """How samples of `shape` are drawn ([C, H, W] with C 1 or 3; [H, W];
    a square [N] as one channel), or None when they are not pictures."""
    shape = tuple(int(d) for d in shape)
    if len(shape) == 3 and shape[0] in (1, 3):
        return shape
    if len(shape) == 2:
        return (1, *shape)
    side = int(round(float(np.sqrt(shape[0])))) if len(shape) == 1 else 0
    return (1, side, side) if side and side * side == shape[0] else None


class Pictures:
    """Writes a recipe's PNGs; without matplotlib, one note and no pictures
    (a run never fails for want of a picture). Only the chief process of a
    data-parallel run draws (`chief`)."""

    def __init__(self, chief: bool = True):
        self.unavailable = False
        self.chief = chief

    def draw(self, write) -> list[str]:
        if self.unavailable or not self.chief:
            return []
        from ..pictures import PicturesUnavailable

        try:
            write()
        except PicturesUnavailable as err:
            self.unavailable = True
            return [f"{err.message}; {err.hint}" if err.hint else err.message]
        return []
