"""PNG pictures of images a run makes: a grid of GAN samples, an
autoencoder's input / noisy input / reconstruction rows.

Written with `matplotlib.image.imsave` (the `plot` extra; Pillow comes with
it) from 8-bit RGB pixels we compute ourselves, so no colormap is involved, and
without matplotlib's "Software" text chunk, so the same images give the same
bytes on every matplotlib version. Without matplotlib, `PicturesUnavailable`
(a UserError) says how to get it; a caller that treats pictures as optional
catches it and prints a note, as the runner does for curves.png.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np

from .errors import UserError

PAD = 2  # pixels between tiles and around the grid
PAD_VALUE = 0.5  # mid grey: visible against white strokes and black backgrounds alike


class PicturesUnavailable(UserError):
    """matplotlib is not installed, so no PNG can be written."""


def as_tiles(images, range: Sequence[float] = (0.0, 1.0)) -> np.ndarray:
    """[N, H, W, 3] floats in [0, 1] from [N, H, W], [N, 1, H, W] or
    [N, 3, H, W] images whose values lie in `range` (values outside are clipped)."""
    lo, hi = (float(v) for v in range)
    if not hi > lo:
        raise UserError(f"range must be (low, high) with low < high, got {tuple(range)}")
    x = np.asarray(images, dtype=np.float64)
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4 or x.shape[1] not in (1, 3) or len(x) == 0:
        raise UserError(f"pictures need images shaped [N, C, H, W] with C 1 or 3 (or [N, H, W]) and N > 0; "
                        f"got shape {list(np.shape(images))}")
    x = np.nan_to_num(x, nan=lo)  # a diverged model's NaNs show as background rather than failing the run
    x = np.clip((x - lo) / (hi - lo), 0.0, 1.0)
    return np.repeat(x, 3 // x.shape[1], axis=1).transpose(0, 2, 3, 1)


def grid(images, rows: int | None = None, range: Sequence[float] = (0.0, 1.0)) -> np.ndarray:
    """One [rows*(H+PAD)+PAD, cols*(W+PAD)+PAD, 3] uint8 picture, images placed
    row by row; `rows` defaults to a near-square grid, empty cells stay grey."""
    tiles = as_tiles(images, range)
    n, h, w, _ = tiles.shape
    if rows is None:
        cols = math.ceil(math.sqrt(n))
        rows = math.ceil(n / cols)
    elif rows < 1:
        raise UserError(f"rows must be positive, got {rows}")
    else:
        cols = math.ceil(n / rows)
    canvas = np.full((rows * (h + PAD) + PAD, cols * (w + PAD) + PAD, 3), PAD_VALUE)
    for i, tile in enumerate(tiles[: rows * cols]):
        top, left = PAD + (i // cols) * (h + PAD), PAD + (i % cols) * (w + PAD)
        canvas[top:top + h, left:left + w] = tile
    return np.round(canvas * 255).astype(np.uint8)


def save_grid(path, images, rows: int | None = None, range: Sequence[float] = (0.0, 1.0)) -> Path:
    """Write `images` ([N, C, H, W], C 1 or 3, values in `range`) as a PNG grid."""
    return _write_png(Path(path), grid(images, rows, range))


def save_reconstructions(path, inputs, noisy, outputs, range: Sequence[float] = (0.0, 1.0)) -> Path:
    """A PNG of three rows: the inputs, the noisy inputs the model saw, and
    its reconstructions, one column per sample."""
    shapes = {np.shape(inputs), np.shape(noisy), np.shape(outputs)}
    if len(shapes) != 1:
        raise UserError(f"inputs, noisy inputs and reconstructions must have one shape; got "
                        f"{[list(np.shape(a)) for a in (inputs, noisy, outputs)]}")
    stacked = np.concatenate([np.asarray(a) for a in (inputs, noisy, outputs)])
    return save_grid(path, stacked, rows=3, range=range)


def _write_png(path: Path, pixels: np.ndarray) -> Path:
    try:
        from matplotlib.image import imsave
    except ImportError:
        raise PicturesUnavailable(f"{path.name} not written: matplotlib is not installed",
                                  hint="pip install 'specc[plot]'") from None
    path.parent.mkdir(parents=True, exist_ok=True)
    imsave(path, pixels, format="png", metadata={"Software": None})
    return path
