"""The GAN recipe (`recipe = gan(D, latent=N)`): the train block's model is
the generator G, D another model of the file.

Each step (the backend's `gan_trainer`) makes one discriminator update on a
real batch (label 1) and a generated one (label 0), then one generator update
with the non-saturating loss, each model with its own optimiser built from
the train block's `optimizer`. Labels are not used; a validation split is
held out but not evaluated (a GAN has no validation loss to watch).

What a run shows and keeps:
- per epoch (metrics.jsonl, progress): the means of d_loss, g_loss, d_real
  (mean D(x)) and d_fake (mean D(G(z)));
- after every epoch, `samples/epoch-NNN.png`: G on a fixed batch of 64
  latent vectors (specc.noise stream STREAM_SAMPLES, step 0), and
  `samples.png` at the end;
- in result.json, `mnist_is` and `mnist_fid` of 10,000 samples (stream
  STREAM_SAMPLES, step 1), scored by specc's shipped MNIST classifier; the
  samples are clipped to the data's range first, as the pictures show them;
- checkpoints hold both models (groups `generator`, `discriminator`) and both
  optimiser states (`generator_optimizer`, `discriminator_optimizer`);
  `weights.safetensors` is the generator's, `discriminator.safetensors` D's.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from .. import backend as backends
from .. import noise
from ..data import Dataset, load_dataset
from ..distributed import SINGLE, World
from ..ir import Model, Program, Train
from ..plan import Plan, make_plan, optimizer_state_shapes
from ..rundir import WEIGHTS
from ..weights import init_weights, save_weights
from . import Arrays, Groups, Pictures, data_range, epoch_picture, image_shape, params_text, weight_shapes

PICTURE_SAMPLES = 64
SCORED_SAMPLES = 10_000
SCORE_BATCH = 500  # latent vectors per generator call when scoring saved weights
SAMPLES_PICTURE = "samples.png"
DISCRIMINATOR_WEIGHTS = "discriminator.safetensors"
ROLES = ("generator", "discriminator")


def latent_batch(seed: int, n: int, latent: int, which: int = 0) -> np.ndarray:
    """Fixed latent vectors: `which` 0 for pictures, 1 for scores."""
    return noise.gaussian(seed, noise.STREAM_SAMPLES, which, (n, latent))


class GanRecipe:
    name = "gan"
    metrics = ("d_loss", "g_loss", "d_real", "d_fake")
    progress_metrics = ("d_loss", "g_loss")
    monitor = None  # two losses: no early stopping (the train block refuses patience)
    weight_groups = ROLES

    def __init__(self, program: Program, model: Model, train: Train, backend: str, device: str = "cpu",
                 world: World = SINGLE):
        self.model, self.train, self.backend, self.device = model, train, backend, device
        self.discriminator = program.models[train.recipe.args["discriminator"]]
        self.latent = int(train.recipe.args["latent"])
        self.range = data_range(train)
        self.plan: Plan | None = None
        self.dataset: Dataset | None = None
        self.trainer: Any = None
        self.data: Any = None
        self.world = world
        self.pictures = Pictures(world.chief)

    def models(self) -> tuple[Model, ...]:
        return (self.model, self.discriminator)

    def describe(self) -> str:
        return f"{params_text(self.model)}, against {self.discriminator.name} ({params_text(self.discriminator)})"

    # ------------------------------------------------------------ data and trainer

    def load_data(self, data_dir: str | None, limit: int | None) -> Dataset:
        """The real samples, shaped as the discriminator takes them."""
        from ..validate import validate_inputs

        d = self.discriminator
        dataset = load_dataset(self.train.data, d.input_shape, d.input_dtype, data_dir=data_dir, limit=limit)
        validate_inputs(dataset, d, self.train)  # labels are not used
        self.plan = make_plan(self.model, self.train, len(dataset.x_train))
        self.dataset = dataset
        return dataset

    def checkpoint_shapes(self) -> dict[str, tuple[dict, str]]:
        optimizer = self.train.optimizer
        shapes = {}
        for role, model in zip(ROLES, self.models()):
            shapes[role] = (weight_shapes(model), f"the weights of the {role} {model.name}")
            shapes[f"{role}_optimizer"] = (optimizer_state_shapes(model, optimizer),
                                           f"the {optimizer.name} optimiser state of the {role} {model.name}")
        return shapes

    def start(self, groups: Groups | None) -> None:
        seed = self.train.seed
        g_weights = groups["generator"] if groups else init_weights(self.model, seed)
        d_weights = groups["discriminator"] if groups else init_weights(self.discriminator, seed)
        self.trainer = backends.get(self.backend).gan_trainer(self.model, self.discriminator, self.plan, g_weights,
                                                              d_weights, self.latent, device=self.device,
                                                              world=self.world)
        if groups:
            self.trainer.set_optimizer_state({role: groups[f"{role}_optimizer"] for role in ROLES})
        self.data = self.trainer.put(self.dataset.x_train)

    # ------------------------------------------------------------ the loop's side

    def begin_epoch(self, order: np.ndarray, epoch: int) -> None:
        self.trainer.begin_epoch(self.data, order, epoch)

    def step(self, i: int) -> None:
        self.trainer.step(i)

    def pull(self) -> dict:
        return self.trainer.pull()

    def evaluate(self, split: str) -> dict | None:
        return None

    def speed_settings(self) -> str:
        return self.trainer.describe_speed()

    def checkpoint(self) -> Groups:
        weights, states = self.trainer.get_weights(), self.trainer.get_optimizer_state()
        return {**{role: weights[role] for role in ROLES}, **{f"{role}_optimizer": states[role] for role in ROLES}}

    def weights(self) -> Groups:
        return dict(self.trainer.get_weights())

    def set_weights(self, groups: Groups) -> None:
        self.trainer.set_weights(groups)

    def end_epoch(self, epoch: int, run_dir: Path) -> list[str]:
        return self.draw(epoch_picture(run_dir, epoch))

    def draw(self, path: Path) -> list[str]:
        shape = image_shape(self.model.output_shape)
        if shape is None or not self.pictures.chief:
            return []
        images = self.trainer.generate(latent_batch(self.train.seed, PICTURE_SAMPLES, self.latent))

        def write():
            from ..pictures import save_grid

            save_grid(path, images.reshape((len(images), *shape)), range=self.range)

        return self.pictures.draw(write)

    # ------------------------------------------------------------ the end

    def final_result(self, run_dir: Path) -> dict:
        d = self.discriminator
        described = {"recipe": self.name, "discriminator": d.name, "discriminator_params": d.params,
                     "latent": self.latent}
        if not self.world.chief:  # the pictures and scores are the chief's to write
            return described
        self.draw(run_dir / SAMPLES_PICTURE)
        images = self.trainer.generate(latent_batch(self.train.seed, SCORED_SAMPLES, self.latent, which=1))
        return {**described, **score(images, self.backend, self.range)}

    def headline(self, result: dict) -> dict:
        return {"mnist_is": result.get("mnist_is"), "mnist_fid": result.get("mnist_fid")}  # the chief's only

    def save_weights(self, run_dir: Path, backend: str) -> Arrays:
        weights = self.trainer.get_weights()
        if not self.world.chief:
            return weights["generator"]
        save_weights(run_dir / WEIGHTS, weights["generator"], {"model": self.model.name, "backend": backend})
        save_weights(run_dir / DISCRIMINATOR_WEIGHTS, weights["discriminator"],
                     {"model": self.discriminator.name, "backend": backend, "role": "discriminator"})
        return weights["generator"]

    def evaluate_saved(self, weights_path: str, data_dir: str | None, batch: int | None) -> dict:
        """The scores of saved generator weights (10,000 samples; no data read)."""
        from ..weights import fit_weights, load_weights

        weights = fit_weights(self.model, load_weights(weights_path), weights_path)
        z = latent_batch(self.train.seed, SCORED_SAMPLES, self.latent, which=1)
        images = generate(self.model, weights, z, self.backend, batch or SCORE_BATCH)
        return {"backend": self.backend, "model": self.model.name, "recipe": self.name,
                **score(images, self.backend, self.range)}


def generate(model: Model, weights: Arrays, z: np.ndarray, backend: str, batch: int = SCORE_BATCH) -> np.ndarray:
    """Inference-mode G(z) from canonical weights, in batches."""
    run = backends.get(backend).run
    return np.concatenate([run(model, weights, z[s:s + batch]) for s in range(0, len(z), batch)])


def score(images: np.ndarray, backend: str, data: tuple[float, float]) -> dict:
    """mnist_is and mnist_fid of generated images, or None for both when they
    are not 28x28 digits (the shipped classifier scores MNIST only)."""
    from ..scoring import mnist_scores

    if math.prod(images.shape[1:]) != 28 * 28:
        return {"mnist_is": None, "mnist_fid": None, "scored_samples": 0}
    scores = mnist_scores(np.clip(images, *data), backend, range=data)
    return {"mnist_is": scores["mnist_is"], "mnist_fid": scores["mnist_fid"], "scored_samples": scores["samples"]}


# ---------------------------------------------------------------- specc sample


def generator_range(model: Model, train: Train | None) -> tuple[float, float]:
    """The range a generator's samples are drawn in: its GAN train block's
    data range, else [-1, 1] for a tanh output and [0, 1] otherwise."""
    if train is not None and train.recipe is not None and train.recipe.name == "gan":
        return data_range(train)
    return (-1.0, 1.0) if model.final_activation == "tanh" else (0.0, 1.0)


def draw_samples(model: Model, train: Train | None, weights: Arrays, n: int, out: Path, backend: str,
                 seed: int) -> Path:
    """A PNG grid of `n` samples of generator `model` with canonical `weights`;
    the latent vectors are the recipe's picture batch for `seed` (so the train
    block's seed and n = 64 redraw its samples.png)."""
    from ..pictures import save_grid
    from ..rundir import RunError

    shape = image_shape(model.output_shape)
    if len(model.input_shape) != 1 or model.input_dtype != "float32":
        raise RunError(f"model {model.name} takes {list(model.input_shape)} {model.input_dtype}, not a latent "
                       "vector: specc sample draws from a generator (input [latent])")
    if shape is None:
        raise RunError(f"model {model.name} outputs {list(model.output_shape)}, which is not a picture "
                       "([C, H, W] with C 1 or 3, [H, W], or a square [N])")
    images = generate(model, weights, latent_batch(seed, n, model.input_shape[0]), backend)
    return save_grid(out, images.reshape((n, *shape)), range=generator_range(model, train))
