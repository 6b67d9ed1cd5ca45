"""specc.pictures: PNG grids of samples and reconstruction rows."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from specc import pictures
from specc.errors import UserError

# A hard import: CI installs .[all,dev] (matplotlib is in it), so its absence fails here, not skips.
from matplotlib.image import imread  # noqa: E402

PAD = pictures.PAD


def _digits(n: int, seed: int = 0, channels: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 1, size=(n, channels, 28, 28)).astype(np.float32)


def test_grid_png_has_the_expected_pixel_size(tmp_path):
    path = pictures.save_grid(tmp_path / "samples" / "epoch-001.png", _digits(10), rows=2)
    pixels = imread(path)
    assert pixels.shape[:2] == (2 * (28 + PAD) + PAD, 5 * (28 + PAD) + PAD)


def test_default_grid_is_near_square(tmp_path):
    pixels = imread(pictures.save_grid(tmp_path / "g.png", _digits(64)))
    assert pixels.shape[:2] == (8 * 30 + PAD, 8 * 30 + PAD)


def test_pixels_land_where_the_grid_puts_them(tmp_path):
    images = np.zeros((4, 1, 28, 28), dtype=np.float32)
    images[3] = 1.0  # the last cell, bottom right of a 2x2 grid, is white
    pixels = imread(pictures.save_grid(tmp_path / "g.png", images, rows=2))
    assert np.allclose(pixels[PAD + 30 + 5, PAD + 30 + 5, :3], 1.0)
    assert np.allclose(pixels[PAD + 5, PAD + 5, :3], 0.0)
    # the padding is grey, told apart from both black and white strokes, between tiles as around them
    border, gap = pixels[0, 0, :3], pixels[PAD + 5, PAD + 28, :3]
    assert np.all(border == border[0]) and 0.25 < border[0] < 0.75
    assert np.array_equal(gap, border)


def test_range_is_rescaled_to_black_and_white(tmp_path):
    images = np.stack([np.full((1, 28, 28), -1.0), np.full((1, 28, 28), 1.0)])
    pixels = imread(pictures.save_grid(tmp_path / "g.png", images, rows=1, range=(-1, 1)))
    assert np.allclose(pixels[PAD + 1, PAD + 1, :3], 0.0)
    assert np.allclose(pixels[PAD + 1, PAD + 30 + 1, :3], 1.0)


def test_same_images_give_the_same_bytes(tmp_path):
    images = _digits(9, seed=3, channels=3)
    first = pictures.save_grid(tmp_path / "a.png", images).read_bytes()
    second = pictures.save_grid(tmp_path / "b.png", images.copy()).read_bytes()
    other = pictures.save_grid(tmp_path / "c.png", _digits(9, seed=4, channels=3)).read_bytes()
    assert first == second
    assert first != other


def test_reconstructions_are_three_rows(tmp_path):
    inputs = _digits(6)
    noisy = inputs + np.random.default_rng(1).normal(0, 0.3, inputs.shape)  # noise leaves [0, 1]: clipped
    pixels = imread(pictures.save_reconstructions(tmp_path / "r.png", inputs, noisy, 1 - inputs))
    assert pixels.shape[:2] == (3 * 30 + PAD, 6 * 30 + PAD)
    assert np.allclose(pixels[PAD:PAD + 28, PAD:PAD + 28, 0], inputs[0, 0], atol=1 / 255)
    assert np.allclose(pixels[PAD + 30:PAD + 58, PAD:PAD + 28, 0], np.clip(noisy[0, 0], 0, 1), atol=1 / 255)
    assert np.allclose(pixels[PAD + 60:PAD + 88, PAD:PAD + 28, 0], 1 - inputs[0, 0], atol=1 / 255)


@pytest.mark.parametrize("shape", [(0, 1, 28, 28), (4, 2, 28, 28), (28, 28), (4, 1, 1, 28, 28)])
def test_bad_shapes_are_user_errors(tmp_path, shape):
    with pytest.raises(UserError, match="shaped"):
        pictures.save_grid(tmp_path / "g.png", np.zeros(shape))


def test_mismatched_reconstruction_rows_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="one shape"):
        pictures.save_reconstructions(tmp_path / "r.png", _digits(3), _digits(3), _digits(2))


def test_without_matplotlib_the_error_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib.image", None)  # import now raises ImportError
    with pytest.raises(pictures.PicturesUnavailable, match="matplotlib") as err:
        pictures.save_grid(tmp_path / "g.png", _digits(2))
    assert "specc[plot]" in err.value.hint
    assert not (tmp_path / "g.png").exists()
