"""specc.scoring: the shipped MNIST classifier, mnist_is and mnist_fid."""

from __future__ import annotations

import hashlib
from importlib import resources

import numpy as np
import pytest

import specc
from specc import scoring
from specc.data import load_dataset
from specc.ir import Call

# A hard import: CI installs .[all,dev], so a missing framework must fail here, not skip.
import jax  # noqa: E402,F401
import scipy.linalg  # noqa: E402  (scipy comes with jax, which requires it)

N = 2_000  # samples per score in these tests (reports use 10,000)


@pytest.fixture(scope="module")
def mnist():
    return load_dataset(Call("mnist", {}), (1, 28, 28))


@pytest.fixture(scope="module")
def ceiling():
    return scoring.real_data_ceiling("jax", samples=N)


def _shipped(name: str):
    return resources.files(scoring.CLASSIFIER_PACKAGE).joinpath(name)


# ---------------------------------------------------------------- the shipped classifier


def test_shipped_weights_are_small_and_fit_the_shipped_spec():
    net = scoring.classifier()
    assert _shipped(scoring.WEIGHTS_FILE).stat().st_size <= 1_000_000
    assert net.model.params <= 250_000
    specc.weights.check_weights(net.model, net.weights)  # raises on a missing or misshapen key
    assert net.body.output_shape == (128,) and net.body.layers[-1].name == scoring.FEATURES_LAYER


def test_shipped_classifier_reaches_99_percent_on_the_test_set(mnist):
    net = scoring.classifier()
    probs = np.concatenate([specc.run(net.model, net.weights, mnist.x_test[i:i + 2500], backend="jax")
                            for i in range(0, len(mnist.x_test), 2500)])
    assert np.mean(probs.argmax(axis=1) == mnist.y_test) >= 0.99
    # The head applied in numpy to the features is the model's own softmax.
    _, log_probs = scoring.features_and_log_probs(mnist.x_test[:500], "jax")
    assert np.allclose(np.exp(log_probs), probs[:500], atol=1e-5)


def test_reference_statistics_belong_to_the_shipped_weights():
    mu, sigma, metadata = scoring.reference_statistics()
    assert mu.shape == (128,) and sigma.shape == (128, 128) and sigma.dtype == np.float64
    assert np.allclose(sigma, sigma.T)
    # the hash of the shipped file's bytes, computed here
    assert metadata["weights_sha256"] == hashlib.sha256(_shipped(scoring.WEIGHTS_FILE).read_bytes()).hexdigest()


# ---------------------------------------------------------------- real data and noise


def test_real_test_digits_score_high_and_real_training_digits_are_close(ceiling):
    assert ceiling["samples"] == N
    assert ceiling["mnist_is"] > 9.0
    assert ceiling["mnist_fid"] < 5.0


def test_uniform_noise_scores_far_below_real_digits(ceiling):
    noise = np.random.default_rng(0).uniform(0, 1, size=(N, 1, 28, 28))
    scores = scoring.mnist_scores(noise, "jax")
    assert scores["samples"] == N
    assert scores["mnist_is"] < 2.0
    assert scores["mnist_fid"] > 20 * max(ceiling["mnist_fid"], 1.0)


def test_one_image_repeated_scores_is_one(mnist):
    scores = scoring.mnist_scores(np.repeat(mnist.x_test[:1], 50, axis=0), "jax")
    assert scores["mnist_is"] == pytest.approx(1.0, abs=1e-9)


def test_tanh_range_gives_the_scores_of_the_same_digits_in_unit_range(mnist):
    digits = mnist.x_test[:500]
    unit = scoring.mnist_scores(digits, "jax")
    tanh = scoring.mnist_scores(digits * 2 - 1, "jax", range=(-1, 1))
    assert tanh["mnist_is"] == pytest.approx(unit["mnist_is"], rel=1e-6)
    assert tanh["mnist_fid"] == pytest.approx(unit["mnist_fid"], rel=1e-5)


def test_backends_agree(mnist):
    digits = mnist.x_test[:500].reshape(500, 784)  # any per-sample shape of 784 values
    jax_scores = scoring.mnist_scores(digits, "jax", batch=200)
    torch_scores = scoring.mnist_scores(digits, "torch", batch=200)
    assert torch_scores["mnist_is"] == pytest.approx(jax_scores["mnist_is"], rel=1e-4)
    assert torch_scores["mnist_fid"] == pytest.approx(jax_scores["mnist_fid"], rel=1e-4)


# ---------------------------------------------------------------- the formulas


def test_inception_score_of_confident_balanced_predictions_is_the_class_count():
    log_probs = np.log(np.full((40, 10), 1e-12))
    log_probs[np.arange(40), np.arange(40) % 10] = 0.0
    assert scoring.inception_score(log_probs) == pytest.approx(10.0, rel=1e-6)
    assert scoring.inception_score(log_probs, splits=4) == pytest.approx(10.0, rel=1e-6)


def test_fid_of_a_set_against_itself_is_zero(mnist):
    features, _ = scoring.features_and_log_probs(mnist.x_test[:N], "jax")
    mu, sigma = scoring.feature_statistics(features)
    assert scoring.frechet_distance(mu, sigma, mu, sigma) < 1e-6 * np.trace(sigma)


def test_fid_of_shifted_means_is_the_squared_shift():
    sigma = _random_psd(np.random.default_rng(2), 5, rank=5)
    shift = np.array([1.0, -2.0, 0.0, 0.5, 3.0])
    assert scoring.frechet_distance(shift, sigma, np.zeros(5), sigma) == pytest.approx(shift @ shift, rel=1e-9)


def _random_psd(rng, size: int, rank: int) -> np.ndarray:
    a = rng.standard_normal((size, rank))
    return a @ a.T


@pytest.mark.parametrize("rank", [6, 3])
def test_trace_of_the_matrix_square_root_matches_brute_force(rank):
    rng = np.random.default_rng(rank)
    s1, s2 = _random_psd(rng, 6, rank), _random_psd(rng, 6, 6)
    # S1 S2 is similar to a PSD matrix: its eigenvalues are real and >= 0, and
    # the trace of its square root is the sum of their square roots.
    brute = np.sqrt(np.clip(np.linalg.eigvals(s1 @ s2).real, 0, None)).sum()
    assert scoring.trace_sqrt_product(s1, s2) == pytest.approx(brute, rel=1e-8)


def test_trace_of_the_matrix_square_root_matches_scipy():
    rng = np.random.default_rng(7)
    s1, s2 = _random_psd(rng, 8, 8), _random_psd(rng, 8, 8)
    expected = np.trace(scipy.linalg.sqrtm(s1 @ s2)).real
    assert scoring.trace_sqrt_product(s1, s2) == pytest.approx(expected, rel=1e-8)


# ---------------------------------------------------------------- user errors


@pytest.mark.parametrize("images, range_, match", [
    (np.zeros((4, 1, 32, 32)), (0, 1), "28x28"),
    (np.zeros((1, 1, 28, 28)), (0, 1), "at least 2"),
    (np.full((4, 784), np.nan), (0, 1), "NaN"),
    (np.full((4, 784), 255.0), (0, 1), "outside the stated range"),
    (np.full((4, 784), -1.0), (0, 1), "outside the stated range"),
    (np.zeros((4, 784)), (1, 0), "low < high"),
])
def test_unscorable_images_are_user_errors(images, range_, match):
    with pytest.raises(specc.errors.UserError, match=match):
        scoring.mnist_scores(images, "jax", range=range_)
