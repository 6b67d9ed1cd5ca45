"""Per-step training values kept on the device until the runner pulls them.

A step writes its values (losses, means) into one row of a device buffer,
which never waits for the device; `pull` copies the filled rows to the host in
one transfer and reduces them there: means weighted by each step's samples,
and the first step whose watched values (the first `watched` columns: the
losses) were not finite.
"""

from __future__ import annotations

import numpy as np
import torch


class StepLog:
    def __init__(self, width: int, watched: int, capacity: int, device: torch.device):
        self.width, self.watched, self.device = width, watched, device
        self._rows = torch.zeros(max(capacity, 1), width, dtype=torch.float32, device=device)
        self._sizes: list[int] = []  # samples of each recorded step (host ints)
        self._steps: list[int] = []  # global step of each recorded step

    def record(self, values: torch.Tensor, size: int, step: int) -> None:
        """Store one step's `width` values (a device tensor; no sync)."""
        k = len(self._sizes)
        if k == len(self._rows):  # never pulled for a long time: grow on the device
            self._rows = torch.cat([self._rows, torch.zeros_like(self._rows)])
        self._rows[k] = values.detach()
        self._sizes.append(int(size))
        self._steps.append(int(step))

    def pull(self) -> tuple[np.ndarray, int, int, np.ndarray | None]:
        """(sums of each value times its step's samples, samples, first
        non-finite global step or -1, that step's row or None); then empty."""
        k = len(self._sizes)
        rows = self._rows[:k].cpu().numpy().astype(np.float64)  # the one sync
        sizes = np.asarray(self._sizes, np.float64)
        steps, self._sizes, self._steps = self._steps, [], []
        bad = ~np.isfinite(rows[:, :self.watched]).all(axis=1)
        first = int(np.argmax(bad)) if bad.any() else -1
        return ((rows * sizes[:, None]).sum(axis=0) if k else np.zeros(self.width), int(sizes.sum()),
                steps[first] if first >= 0 else -1, rows[first] if first >= 0 else None)
