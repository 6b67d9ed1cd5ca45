"""curves.png: loss and accuracy per epoch, for one run or several overlaid
(for example the same spec trained on jax and on torch). Accuracy is drawn
only when a run recorded it (its train block asked for `metrics = [accuracy]`).
A GAN's runs draw d_loss and g_loss, and beside them d_real and d_fake (the
discriminator's mean outputs)."""

from __future__ import annotations

import json
from pathlib import Path


def read_metrics(run_dir: Path) -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir} is not a run directory (no metrics.jsonl)")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _label(run_dir: Path) -> str:
    result = Path(run_dir) / "result.json"
    if result.is_file():
        r = json.loads(result.read_text())
        backends = r.get("backends") or [r["backend"]]  # a resumed run may have changed backend
        return f"{r['model']} ({' -> '.join(backends)})"
    return Path(run_dir).name


def plot_runs(run_dirs: list[Path], out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [(run_dir, read_metrics(run_dir)) for run_dir in run_dirs]
    if any("d_loss" in r for _, rows in runs for r in rows):
        return _plot_gan_runs(runs, out, plt)
    with_accuracy = any("accuracy" in r or "val_accuracy" in r for _, rows in runs for r in rows)
    fig, axes = plt.subplots(1, 2 if with_accuracy else 1, figsize=(11 if with_accuracy else 6, 4), squeeze=False)
    ax_loss, ax_acc = axes[0][0], axes[0][-1]
    for run_dir, rows in runs:
        epochs = [r["epoch"] for r in rows]
        label = _label(run_dir)
        (line,) = ax_loss.plot(epochs, [r["loss"] for r in rows], marker="o", label=f"{label} train")
        if any("val_loss" in r for r in rows):
            ax_loss.plot(epochs, [r.get("val_loss") for r in rows], "--", color=line.get_color(), label=f"{label} val")
        if any("accuracy" in r for r in rows):
            ax_acc.plot(epochs, [r.get("accuracy") for r in rows], marker="o", color=line.get_color(), label=f"{label} train")
        if any("val_accuracy" in r for r in rows):
            ax_acc.plot(epochs, [r.get("val_accuracy") for r in rows], "--", color=line.get_color(), label=f"{label} val")
    ax_loss.set(title="loss", xlabel="epoch")
    if with_accuracy:
        ax_acc.set(title="accuracy", xlabel="epoch")
    for ax in axes[0]:
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return Path(out)


def _plot_gan_runs(runs: list, out: Path, plt) -> Path:
    fig, (ax_loss, ax_d) = plt.subplots(1, 2, figsize=(11, 4))
    for run_dir, rows in runs:
        epochs, label = [r["epoch"] for r in rows], _label(run_dir)
        (line,) = ax_loss.plot(epochs, [r.get("d_loss") for r in rows], marker="o", label=f"{label} d_loss")
        ax_loss.plot(epochs, [r.get("g_loss") for r in rows], "--", marker="o", color=line.get_color(),
                     label=f"{label} g_loss")
        ax_d.plot(epochs, [r.get("d_real") for r in rows], marker="o", color=line.get_color(), label=f"{label} D(x)")
        ax_d.plot(epochs, [r.get("d_fake") for r in rows], "--", color=line.get_color(), label=f"{label} D(G(z))")
    ax_loss.set(title="losses", xlabel="epoch")
    ax_d.set(title="discriminator outputs", xlabel="epoch", ylim=(0, 1))
    for ax in (ax_loss, ax_d):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return Path(out)
