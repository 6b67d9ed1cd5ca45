"""The supervised recipe: one model learning x -> y (classifiers, regressors).

It holds one backend `Trainer` (the protocol below) and hands the loop its
steps; targets are prepared for the loss (`prepare_targets`) and accuracy is
reported only when the train block asks for it (`metrics = [accuracy]`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import numpy as np

from .. import backend as backends
from ..data import Dataset, load_dataset
from ..ir import Model, Program, Train
from ..plan import Plan, make_plan, optimizer_state_shapes
from ..rundir import WEIGHTS
from ..weights import init_weights, save_weights
from ..distributed import SINGLE, World
from . import Arrays, Groups, Pictures, params_text, weight_shapes


class Trainer(Protocol):
    """What a backend's `trainer(model, plan, weights, device)` returns."""

    def put(self, x: np.ndarray, y: np.ndarray | None) -> Any: ...  # a whole split, moved to the device once
    def begin_epoch(self, data: Any, order: np.ndarray, epoch: int) -> None: ...
    def step(self, i: int) -> None: ...  # batch i of the epoch's order; asynchronous
    def pull(self) -> dict: ...  # sync: loss, accuracy (None unless asked), samples, bad_step (-1: none), bad_value
    def evaluate(self, data: Any, batch: int) -> dict: ...  # inference mode: loss, accuracy
    def get_weights(self) -> dict[str, np.ndarray]: ...
    def set_weights(self, weights: dict[str, np.ndarray]) -> None: ...
    def get_optimizer_state(self) -> dict[str, np.ndarray]: ...  # canonical: "<opt>/<slot>/<weight key>", "<opt>/step"
    def set_optimizer_state(self, state: dict[str, np.ndarray]) -> None: ...  # RunError naming a key that does not fit
    def describe_speed(self) -> str: ...  # the speed and precision settings in effect, in words


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
    if train.loss == "cross_entropy":
        y = class_ids(model, y)
        if y.dtype.kind == "f":  # whole numbers (validated): the ids
            return y.astype(np.int32)
    return y


def class_ids(model: Model, y: np.ndarray) -> np.ndarray:
    """Class ids as the cross-entropy takes them, one per output position:
    a column of ids ([N, 1] for an output [N, C], as a CSV gives them) is
    flattened to [N], as Keras's sparse cross-entropy does."""
    per_sample = tuple(model.output_shape[:-1])
    if y.shape[1:] == per_sample + (1,):
        return y.reshape(y.shape[:-1])
    return y


def accuracy_kind(model: Model, train: Train, y: np.ndarray) -> str | None:
    if train.loss == "cross_entropy":
        return "categorical"
    if train.loss == "binary_cross_entropy":
        return "binary"
    if np.issubdtype(y.dtype, np.integer) and len(model.output_shape) == 1:
        return "onehot"
    return None


class SupervisedRecipe:
    """x -> y with one model and one trainer."""

    name = "supervised"
    progress_metrics = ("loss",)
    monitor = "loss"
    weight_groups = ("weights",)

    def __init__(self, program: Program, model: Model, train: Train, backend: str, device: str = "cpu",
                 world: World = SINGLE):
        self.model, self.train, self.backend, self.device = model, train, backend, device
        self.plan: Plan | None = None
        self.dataset: Dataset | None = None
        self.trainer: Trainer | None = None
        self.splits: dict[str, Any] = {}
        self.world = world
        self.pictures = Pictures(world.chief)  # the autoencoder draws; only the chief

    @property
    def metrics(self) -> tuple[str, ...]:
        return ("loss", "accuracy") if self.plan.accuracy is not None else ("loss",)

    def models(self) -> tuple[Model, ...]:
        return (self.model,)

    def describe(self) -> str:
        return params_text(self.model)

    # ------------------------------------------------------------ data and trainer

    def load_data(self, data_dir: str | None, limit: int | None) -> Dataset:
        from ..validate import validate_dataset

        dataset = load_dataset(self.train.data, self.model.input_shape, self.model.input_dtype,
                               data_dir=data_dir, limit=limit)
        validate_dataset(dataset, self.model, self.train)  # before a backend sees the data
        self.plan = make_plan(self.model, self.train, len(dataset.x_train),
                              accuracy_kind(self.model, self.train, dataset.y_train))
        self.dataset = dataset
        return dataset

    def checkpoint_shapes(self) -> dict[str, tuple[dict, str]]:
        name, optimizer = self.model.name, self.train.optimizer
        return {"weights": (weight_shapes(self.model), f"the weights of model {name}"),
                "optimizer": (optimizer_state_shapes(self.model, optimizer),
                              f"the {optimizer.name} optimiser state of model {name}")}

    def start(self, groups: Groups | None) -> None:
        weights = groups["weights"] if groups else init_weights(self.model, self.train.seed)
        self.trainer = backends.get(self.backend).trainer(self.model, self.plan, weights, device=self.device,
                                                           world=self.world)
        if groups:
            self.trainer.set_optimizer_state(groups["optimizer"])
        self.splits = self.place()

    def place(self) -> dict[str, Any]:
        """Each split the data set has, on the device once, with its targets."""
        d = self.dataset
        splits = {"train": (d.x_train, d.y_train), "val": (d.x_val, d.y_val), "test": (d.x_test, d.y_test)}
        return {split: self.trainer.put(x, prepare_targets(self.model, self.train, y))
                for split, (x, y) in splits.items() if x is not None}

    # ------------------------------------------------------------ the loop's side

    def begin_epoch(self, order: np.ndarray, epoch: int) -> None:
        self.trainer.begin_epoch(self.splits["train"], order, epoch)

    def step(self, i: int) -> None:
        self.trainer.step(i)

    def pull(self) -> dict:
        return self.trainer.pull()

    def evaluate(self, split: str) -> dict | None:
        if split not in self.splits:
            return None
        result = self.trainer.evaluate(self.splits[split], self.plan.eval_batch)
        return {name: result[name] for name in self.metrics}

    def speed_settings(self) -> str:
        return self.trainer.describe_speed()

    def checkpoint(self) -> Groups:
        return {"weights": self.trainer.get_weights(), "optimizer": self.trainer.get_optimizer_state()}

    def weights(self) -> Groups:
        return {"weights": self.trainer.get_weights()}

    def set_weights(self, groups: Groups) -> None:
        self.trainer.set_weights(groups["weights"])

    def end_epoch(self, epoch: int, run_dir: Path) -> list[str]:
        return []

    # ------------------------------------------------------------ the end

    def final_result(self, run_dir: Path) -> dict:
        test = self.trainer.evaluate(self.splits["test"], self.plan.eval_batch)
        return {"test_loss": test["loss"], "test_accuracy": test.get("accuracy")}

    def headline(self, result: dict) -> dict:
        return {"test loss": result["test_loss"], "test accuracy": result["test_accuracy"]}

    def save_weights(self, run_dir: Path, backend: str) -> Arrays:
        weights = self.trainer.get_weights()
        if self.world.chief:
            save_weights(run_dir / WEIGHTS, weights, {"model": self.model.name, "backend": backend})
        return weights

    def evaluate_saved(self, weights_path: str, data_dir: str | None, batch: int | None) -> dict:
        """Test loss and accuracy of saved canonical weights."""
        from ..validate import validate_dataset
        from ..weights import fit_weights, load_weights

        model, train = self.model, self.train
        weights = fit_weights(model, load_weights(weights_path), weights_path)
        dataset = load_dataset(train.data, model.input_shape, model.input_dtype, data_dir=data_dir)
        validate_dataset(dataset, model, train)
        plan = make_plan(model, train, len(dataset.x_train), accuracy_kind(model, train, dataset.y_test))
        trainer = backends.get(self.backend).trainer(model, plan, weights, device=self.device)
        data = trainer.put(dataset.x_test, prepare_targets(model, train, dataset.y_test))
        result = trainer.evaluate(data, batch or plan.eval_batch)
        return {"backend": self.backend, "model": model.name, "test_loss": result["loss"],
                "test_accuracy": result.get("accuracy"), "test_samples": len(dataset.x_test)}
