"""specc.noise: counter-based noise that is the same on numpy, JAX and
PyTorch (bits exactly, Gaussians to float32 rounding), standard normal, and
different for every (seed, stream, step)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from specc import noise

N = 100_000
HASH_OF_1 = 0x688990C0  # lowbias32(1)
KEYS = [(0, noise.STREAM_LATENT, 0), (7, noise.STREAM_SAMPLES, 123_456), (2**40 + 3, 3, 2**32 - 1)]


def _backends():
    out = {}
    try:
        from specc.backends.jax_flax import noise as jax_noise

        out["jax"] = (jax_noise, lambda a: np.asarray(a))
    except ImportError:
        pass
    try:
        from specc.backends.pytorch import noise as torch_noise

        out["torch"] = (torch_noise, lambda t: t.cpu().numpy())
    except ImportError:
        pass
    return out


BACKENDS = _backends()


def test_the_reference_is_pinned():
    """The formula is a contract (runs and checkpoints depend on it): pin its first words."""
    assert noise.bits(0, 1, 0, 4).tolist() == [484620674, 1324991316, 1208746369, 1577171051]
    assert noise.hash_int(0) == 0 and noise.hash_int(1) == HASH_OF_1


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("key", KEYS, ids=str)
def test_backends_draw_the_reference_bits_exactly(backend, key):
    module, to_numpy = BACKENDS[backend]
    want = noise.bits(*key, 1000).astype(np.int64)
    np.testing.assert_array_equal(to_numpy(module.bits(*key, 1000)).astype(np.int64), want)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("key", KEYS, ids=str)
def test_backends_draw_the_reference_gaussians(backend, key):
    module, to_numpy = BACKENDS[backend]
    want = noise.gaussian(*key, (N,))
    got = to_numpy(module.gaussian(*key, (N,)))
    assert got.dtype == np.float32 and got.shape == (N,)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(to_numpy(module.uniform(*key, (50,))), noise.uniform(*key, (50,)))


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_block_of_steps_is_each_step_stacked(backend):
    module, to_numpy = BACKENDS[backend]
    steps = np.arange(5, 9)
    want = np.stack([noise.gaussian(3, 1, int(s), (4, 6)) for s in steps])
    np.testing.assert_array_equal(noise.gaussian(3, 1, steps, (4, 6)), want)
    np.testing.assert_allclose(to_numpy(module.gaussian(3, 1, steps, (4, 6))), want, rtol=0, atol=1e-6)


def test_jax_draws_inside_jit_from_a_traced_step():
    import jax
    from specc.backends.jax_flax import noise as jax_noise

    draw = jax.jit(lambda step: jax_noise.gaussian(5, 1, step, (16, 8)))
    for step in (0, 41):
        np.testing.assert_allclose(np.asarray(draw(jax.numpy.int32(step))), noise.gaussian(5, 1, step, (16, 8)),
                                   rtol=0, atol=1e-6)


def test_a_smaller_batch_gets_the_first_rows():
    full = noise.gaussian(1, 1, 9, (16, 8))
    np.testing.assert_array_equal(noise.gaussian(1, 1, 9, (5, 8)), full[:5])


def _normal_cdf(x: np.ndarray) -> np.ndarray:
    erf = np.vectorize(math.erf, otypes=[np.float64])
    return 0.5 * (1.0 + erf(x / math.sqrt(2.0)))


@pytest.mark.parametrize("key", KEYS, ids=str)
def test_values_are_standard_normal(key):
    z = np.sort(noise.gaussian(*key, (N,)).astype(np.float64))
    assert abs(z.mean()) < 5 / math.sqrt(N)  # 5 standard errors
    assert abs(z.var() - 1.0) < 5 * math.sqrt(2.0 / N)
    cdf = _normal_cdf(z)
    ks = max(np.max(np.arange(1, N + 1) / N - cdf), np.max(cdf - np.arange(N) / N))
    assert ks < 1.95 / math.sqrt(N)  # Kolmogorov-Smirnov, p = 0.001
    assert np.unique(z).size > 0.99 * N
    lag = noise.gaussian(*key, (N,))
    assert abs(np.corrcoef(lag[:-1], lag[1:])[0, 1]) < 5 / math.sqrt(N)  # neighbours uncorrelated


def test_uniforms_are_in_the_open_unit_interval():
    u = noise.uniform(0, 9, 0, (N,))
    assert u.min() > 0 and u.max() < 1
    assert abs(u.mean() - 0.5) < 5 * math.sqrt(1 / 12 / N)


NEIGHBOURS = [((0, 1, 0), (1, 1, 0)), ((0, 1, 0), (0, 2, 0)), ((0, 1, 0), (0, 1, 1)), ((0, 1, 0), (0, 1, 2**16)),
              ((0, 1, 0), (2**32, 1, 0)), ((5, 1, 3), (3, 1, 5)), ((0, 1, 1), (1, 1, 0))]


@pytest.mark.parametrize("a,b", NEIGHBOURS, ids=str)
def test_every_seed_stream_and_step_has_its_own_numbers(a, b):
    x, y = noise.gaussian(*a, (10_000,)), noise.gaussian(*b, (10_000,))
    assert abs(np.corrcoef(x, y)[0, 1]) < 0.05
    shared = np.intersect1d(noise.bits(*a, 10_000), noise.bits(*b, 10_000))
    assert len(shared) < 5  # two random sets of 10k words share ~0.02 by chance


def test_negative_seeds_are_refused():
    with pytest.raises(ValueError, match="non-negative"):
        noise.gaussian(-1, 1, 0, (2,))
