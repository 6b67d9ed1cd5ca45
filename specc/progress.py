"""What the user sees while a run trains: a rich progress bar (epoch, step,
the recipe's headline metrics, samples/s, ETA) and one line per epoch.

Every recipe reports through the same view: it names the metrics to show and
the loop hands over their running means, so a GAN shows `d_loss` and `g_loss`
where a classifier shows `loss`.
"""

from __future__ import annotations

from pathlib import Path

# Row keys that are not metrics (shown in their own form at the end of a line).
_TIMING = ("epoch", "seconds", "samples_per_second")


def metrics_text(values: dict) -> str:
    return "  ".join(f"{name} {value:.4f}" for name, value in values.items())


class Progress:
    """A progress bar and a row per epoch; silent when `quiet`."""

    def __init__(self, quiet: bool, epochs: int, steps: int):
        self.quiet = quiet
        self.epochs, self.steps = epochs, steps
        self.task = None
        if quiet:
            return
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress as Bar, TextColumn, TimeRemainingColumn

        self.console = Console(highlight=False, soft_wrap=True)  # log lines stay whole when piped
        self.progress = Bar(
            TextColumn("epoch {task.fields[epoch]}/{task.fields[epochs]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[metrics]}"),
            TextColumn("{task.fields[rate]:,.0f} samples/s"),
            TimeRemainingColumn(),
            console=self.console,
            transient=True,
        )

    def __enter__(self):
        if not self.quiet:
            self.progress.__enter__()
        return self

    def __exit__(self, *exc):
        if not self.quiet:
            self.progress.__exit__(*exc)

    def header(self, text: str) -> None:
        if not self.quiet:
            self.console.print(f"[bold]specc train[/] {text}")

    def step(self, epoch: int, step: int, means: dict, rate: float) -> None:
        if self.quiet:
            return
        fields = {"epoch": epoch + 1, "epochs": self.epochs, "metrics": metrics_text(means), "rate": rate}
        if self.task is None:
            self.task = self.progress.add_task("train", total=self.steps, **fields)
        self.progress.update(self.task, completed=step, **fields)

    def epoch(self, row: dict) -> None:
        if self.quiet:
            return
        if self.task is not None:
            self.progress.reset(self.task, total=self.steps)
        shown = {key: value for key, value in row.items() if key not in _TIMING and isinstance(value, (int, float))}
        parts = [f"epoch {row['epoch']:>3}/{self.epochs}", metrics_text(shown),
                 f"{row['seconds']:.1f}s", f"{row['samples_per_second']:,.0f} samples/s"]
        self.console.print("  ".join(parts))

    def note(self, text: str) -> None:
        if not self.quiet:
            self.console.print(text)

    def result(self, figures: dict, result: dict, run_dir: Path) -> None:
        """`figures`: the recipe's headline results by label ("test loss"), in order."""
        if self.quiet:
            return
        shown = ", ".join(f"{label} {value:.4f}" for label, value in figures.items()
                          if value is not None)
        rate = result.get("train_samples_per_second")
        rate_text = f", {rate:,.0f} samples/s" if rate else ""
        self.console.print(f"[bold]done[/]: {shown + '; ' if shown else ''}{result['train_seconds']:.1f}s "
                           f"training{rate_text}; saved in {run_dir}")
