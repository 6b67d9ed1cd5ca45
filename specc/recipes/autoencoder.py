"""The autoencoder recipe (`recipe = autoencoder(noise=s)`): one model
learning to give back its input.

The target is the clean input; with `noise` > 0 the model sees it with
Gaussian noise of standard deviation s (not clipped), added on the device in
the backend's compiled step from specc.noise, so both backends train on the
same noisy batches (s = 0: a plain autoencoder). Labels are not used.

The loss (binary_cross_entropy, fused with a final sigmoid, mse or mae) is
reported per epoch; `test_loss` in result.json is the denoising loss: each
test input with its own fixed noise (the same on every epoch, backend and
`specc eval`) against the clean image. Pictures: `samples/epoch-NNN.png`
after every epoch and `reconstructions.png` at the end, three rows of the
first test digits: input, noisy input, reconstruction.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import backend as backends
from .. import noise
from ..data import Dataset, load_dataset
from ..plan import EVAL_NOISE_STREAM, make_plan
from . import data_range, epoch_picture, image_shape
from .supervised import SupervisedRecipe

PICTURE_DIGITS = 16  # columns of the reconstruction pictures
RECONSTRUCTIONS = "reconstructions.png"


class AutoencoderRecipe(SupervisedRecipe):
    name = "autoencoder"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.noise = float(self.train.recipe.args.get("noise", 0.0))

    def load_data(self, data_dir: str | None, limit: int | None) -> Dataset:
        from ..validate import validate_inputs

        dataset = load_dataset(self.train.data, self.model.input_shape, self.model.input_dtype,
                               data_dir=data_dir, limit=limit)
        validate_inputs(dataset, self.model, self.train)  # no labels: the target is the input
        # `metrics = [accuracy]`: Keras's binary accuracy per pixel, for binary cross-entropy only.
        accuracy = "binary" if self.train.loss == "binary_cross_entropy" else None
        self.plan = make_plan(self.model, self.train, len(dataset.x_train), accuracy)
        self.dataset = dataset
        return dataset

    def place(self) -> dict:
        """Inputs only: the trainer's target is the input itself."""
        d = self.dataset
        splits = {"train": d.x_train, "val": d.x_val, "test": d.x_test}
        return {split: self.trainer.put(x, None) for split, x in splits.items() if x is not None}

    # ------------------------------------------------------------ pictures and results

    def noisy(self, x: np.ndarray, first: int = 0) -> np.ndarray:
        """`x` (test samples first, first+1, ...) with their fixed evaluation
        noise, as the trainers add it (numpy: specc.noise's reference)."""
        if not self.noise:
            return x
        steps = np.arange(first, first + len(x))
        return x + np.float32(self.noise) * noise.gaussian(self.plan.seed, EVAL_NOISE_STREAM, steps, x.shape[1:])

    def draw(self, path: Path) -> list[str]:
        shape = image_shape(self.model.input_shape)
        if shape is None or not self.pictures.chief:
            return []
        clean = self.dataset.x_test[:PICTURE_DIGITS].astype(np.float32)
        noisy = self.noisy(clean)
        out = backends.get(self.backend).run(self.model, self.trainer.get_weights(), noisy)

        def write():
            from ..pictures import save_reconstructions

            as_images = [a.reshape((len(a), *shape)) for a in (clean, noisy, out)]
            save_reconstructions(path, *as_images, range=data_range(self.train))

        return self.pictures.draw(write)

    def end_epoch(self, epoch: int, run_dir: Path) -> list[str]:
        return self.draw(epoch_picture(run_dir, epoch))

    def final_result(self, run_dir: Path) -> dict:
        test = self.trainer.evaluate(self.splits["test"], self.plan.eval_batch)
        self.draw(run_dir / RECONSTRUCTIONS)
        accuracy = {"test_accuracy": test["accuracy"]} if self.plan.accuracy else {}
        return {"recipe": self.name, "noise": self.noise, "test_loss": test["loss"], **accuracy}

    def headline(self, result: dict) -> dict:
        return {"test loss": result["test_loss"], "test accuracy": result.get("test_accuracy")}

    def evaluate_saved(self, weights_path: str, data_dir: str | None, batch: int | None) -> dict:
        """The denoising test loss of saved canonical weights."""
        from ..weights import fit_weights, load_weights

        weights = fit_weights(self.model, load_weights(weights_path), weights_path)
        self.load_data(data_dir, None)
        self.trainer = backends.get(self.backend).trainer(self.model, self.plan, weights, device=self.device)
        result = self.trainer.evaluate(self.trainer.put(self.dataset.x_test, None), batch or self.plan.eval_batch)
        return {"backend": self.backend, "model": self.model.name, "recipe": self.name, "noise": self.noise,
                "test_loss": result["loss"], "test_accuracy": result.get("accuracy"),
                "test_samples": len(self.dataset.x_test)}
