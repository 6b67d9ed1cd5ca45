"""The epoch loop every recipe shares: batch order, pull cadence, throughput,
the NaN guard, metric rows, early stopping, a checkpoint after each epoch and
the recipe's pictures.

The hot loop never waits for the device per step: the recipe's trainers keep
their metric sums on the device and the loop reads them (`pull`) only every
`pull_every` steps, for the progress bar. Throughput is timed between pulls
(each pull waits for the device), leaving out the run's first steps, which
compile.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

from .checkpoint import STATE, Checkpoint, damaged
from .data import batch_order
from .progress import Progress
from .recipes import Recipe
from .rundir import RunDir, RunError

WARMUP_STEPS = 5  # the first steps of a run compile: pulled once, then left out of the timing


@dataclass
class History:
    rows: list[dict] = field(default_factory=list)
    best_val_loss: float = math.inf  # the monitored metric's best (val_loss, or loss without validation)
    best_epoch: int = -1
    bad_epochs: int = 0

    @classmethod
    def resumed(cls, checkpoint: Checkpoint) -> "History":
        try:
            history = cls(**checkpoint.state["history"])
        except TypeError as err:
            raise damaged(checkpoint.folder / STATE, f"holds a malformed history ({err})") from None
        if history.best_val_loss is None:  # nothing monitored yet (see state)
            history.best_val_loss = math.inf
        return history

    def state(self) -> dict:
        """As state.json keeps it: strict JSON, so no Infinity before anything was monitored."""
        return {**self.__dict__, "best_val_loss": None if math.isinf(self.best_val_loss) else self.best_val_loss}


@dataclass(frozen=True)
class Settings:
    epochs: int
    steps_per_epoch: int
    batch: int
    seed: int
    train_samples: int
    pull_every: int
    patience: int | None


@dataclass
class Outcome:
    history: History
    best: dict | None  # early stopping's best weights, by group
    stopped_early: bool = False
    timed_seconds: float = 0.0
    timed_samples: int = 0
    overhead_seconds: float = 0.0  # the running epoch's validation, checkpoint, metric row and pictures
    # (whole seconds, overhead seconds) of each epoch this session ran
    epoch_times: list[tuple[float, float]] = field(default_factory=list)

    @property
    def overhead_fraction(self) -> float | None:
        """The share of an epoch's time that is not training steps, in the
        steady state: over the session's epochs after its first (which also
        compiles the train and eval steps), or its one epoch."""
        times = self.epoch_times[1:] or self.epoch_times
        whole = sum(seconds for seconds, _ in times)
        return round(sum(overhead for _, overhead in times) / whole, 4) if whole > 0 else None

    @property
    def samples_per_second(self) -> float | None:
        return round(self.timed_samples / self.timed_seconds, 1) if self.timed_seconds > 0 else None


Save = Callable[..., object]  # specc.checkpoint.save_checkpoint's signature


class EpochLoop:
    def __init__(self, recipe: Recipe, run_dir: RunDir, view: Progress, settings: Settings, save: Save,
                 run_info: dict, on_epoch_end: Callable[[int, dict], None] | None = None):
        self.recipe, self.run_dir, self.view, self.settings = recipe, run_dir, view, settings
        self.save, self.run_info, self.on_epoch_end = save, run_info, on_epoch_end

    def run(self, start_epoch: int, outcome: Outcome) -> Outcome:
        for epoch in range(start_epoch, self.settings.epochs):
            started, outcome.overhead_seconds = time.perf_counter(), 0.0
            row = self._epoch(epoch, start_epoch, outcome)
            stop = self._end_epoch(epoch, row, outcome)
            outcome.epoch_times.append((time.perf_counter() - started, outcome.overhead_seconds))
            if stop:
                outcome.stopped_early = True
                break
        return outcome

    def _epoch(self, epoch: int, first_epoch: int, outcome: Outcome) -> dict:
        s, recipe = self.settings, self.recipe
        started = time.perf_counter()
        recipe.begin_epoch(batch_order(s.train_samples, s.batch, s.seed, epoch), epoch)
        tally = _Tally(recipe.metrics, time.perf_counter() if epoch > first_epoch else None)
        warmup = min(WARMUP_STEPS, s.steps_per_epoch)
        for i in range(s.steps_per_epoch):
            recipe.step(i)
            warm = epoch == first_epoch and i == warmup - 1
            if warm or i == s.steps_per_epoch - 1 or (i + 1) % s.pull_every == 0:
                pulled = recipe.pull()
                self._stop_if_not_finite(pulled, epoch)
                tally.add(pulled, time.perf_counter(), outcome)
                rate = outcome.timed_samples / outcome.timed_seconds if outcome.timed_seconds > 0 else 0.0
                self.view.step(epoch, i + 1, tally.means(recipe.progress_metrics), rate)
        row = {"epoch": epoch + 1, **tally.means(recipe.metrics)}
        validating = time.perf_counter()
        row.update({f"val_{name}": value for name, value in (recipe.evaluate("val") or {}).items()})
        outcome.overhead_seconds += time.perf_counter() - validating
        seconds = time.perf_counter() - started
        row["seconds"] = round(seconds, 3)
        row["samples_per_second"] = round(tally.samples / seconds, 1)
        return row

    def _stop_if_not_finite(self, pulled: dict, epoch: int) -> None:
        if pulled.get("bad_step", -1) < 0:
            return
        bad, steps = int(pulled["bad_step"]), self.settings.steps_per_epoch
        kept = (f"the last good checkpoint (epoch {epoch}) is kept in {self.run_dir.path}" if epoch > 0
                else "no epoch completed, so there is no checkpoint")
        raise RunError(f"the loss became {pulled.get('bad_value', 'NaN')} at epoch {epoch + 1}, step "
                       f"{bad - epoch * steps + 1} (global step {bad + 1}); stopped; {kept}; "
                       f"try a smaller learning rate (--lr)")

    def _end_epoch(self, epoch: int, row: dict, outcome: Outcome) -> bool:
        """Record the row, keep early stopping's best, checkpoint, draw the
        recipe's pictures; True when early stopping ends the run."""
        started = time.perf_counter()
        try:
            return self._record(epoch, row, outcome)
        finally:
            outcome.overhead_seconds += time.perf_counter() - started

    def _record(self, epoch: int, row: dict, outcome: Outcome) -> bool:
        history, recipe = outcome.history, self.recipe
        history.rows.append(row)
        self.run_dir.append_row(row)
        self.view.epoch(row)
        monitored = _monitored(row, recipe.monitor)
        if monitored is not None:
            if row[monitored] < history.best_val_loss:
                history.best_val_loss, history.best_epoch, history.bad_epochs = row[monitored], epoch, 0
                if self.settings.patience:
                    outcome.best = recipe.weights()
            else:
                history.bad_epochs += 1
        best = {f"best_{group}": arrays for group, arrays in (outcome.best or {}).items()}
        self.save(self.run_dir.path, epoch, recipe.checkpoint() | best, {"history": history.state(),
                                                                          "run": self.run_info})
        for note in recipe.end_epoch(epoch, self.run_dir.path):
            self.view.note(note)
        if self.on_epoch_end is not None:
            self.on_epoch_end(epoch, row)
        patience = self.settings.patience
        if monitored is not None and patience and history.bad_epochs >= patience:
            self.view.note(f"early stopping: no improvement in {monitored} for {patience} epochs; "
                           f"keeping the weights of epoch {history.best_epoch + 1}")
            return True
        return False


def _monitored(row: dict, monitor: str | None) -> str | None:
    """The row key early stopping watches: the validation value when there is one."""
    if monitor is None:
        return None
    return f"val_{monitor}" if f"val_{monitor}" in row else monitor


class _Tally:
    """Sample-weighted sums of the pulled metrics over one epoch, and the
    throughput between pulls."""

    def __init__(self, names: tuple[str, ...], mark: float | None):
        self.sums = dict.fromkeys(names, 0.0)
        self.samples = 0
        self.mark, self.mark_samples = mark, 0

    def add(self, pulled: dict, now: float, outcome: Outcome) -> None:
        n = int(pulled["samples"])
        for name in self.sums:
            self.sums[name] += float(pulled.get(name) or 0.0) * n
        self.samples += n
        if self.mark is not None:
            outcome.timed_seconds += now - self.mark
            outcome.timed_samples += self.samples - self.mark_samples
        self.mark, self.mark_samples = now, self.samples

    def means(self, names) -> dict:
        return {name: self.sums[name] / max(self.samples, 1) for name in names}
