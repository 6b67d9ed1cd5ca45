"""GAN scores with specc's own MNIST classifier: `mnist_is` and `mnist_fid`.

The Inception Score and the Frechet Inception Distance, with a small MNIST
CNN in place of Inception: the classifier ships inside the package
(`specc/mnist_classifier`: the spec, its canonical weights and the feature
statistics of the real MNIST test set), so scoring needs no download and no
data. Only numpy here; the classifier runs on the chosen backend through the
backend registry, exactly as `specc.run` does.

- Features are the output of the classifier's layer named `features` (the
  penultimate Dense(128, relu)); the class probabilities are the softmax head
  applied to those same features in numpy, so one forward pass gives both
  (the Dropout between them is the identity at inference).
- `mnist_is` = exp(mean over samples of KL(p(y|x) || p(y))), p(y) the mean of
  p(y|x) over the samples: by default ONE split of all samples (one number
  that does not depend on sample order); `inception_score(probs, splits=10)`
  gives the mean over 10 splits that some papers quote. It lies in [1, 10].
- `mnist_fid` = |mu1 - mu2|^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)) between the
  features of the given images and those of the real MNIST test set (mean and
  covariance, `np.cov` with N - 1, stored in float64).
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
from dataclasses import dataclass
from importlib import resources
from typing import Sequence

import numpy as np

from . import backend as backends
from .errors import UserError
from .ir import Call, Model

CLASSIFIER_PACKAGE = "specc.mnist_classifier"
SPEC_FILE = "mnist_classifier.spec"
WEIGHTS_FILE = "weights.safetensors"
REFERENCE_FILE = "test_features.safetensors"  # mu and sigma of the real test set's features
FEATURES_LAYER = "features"
IMAGE_SHAPE = (1, 28, 28)
RANGE_SLACK = 1e-3  # values this far (relative) outside the stated range are an error, not a rounding


class ScoringError(UserError):
    """Images that cannot be scored, or a damaged shipped classifier."""


@dataclass(frozen=True)
class Classifier:
    """The shipped classifier split for scoring: `body` ends at the features."""

    model: Model
    body: Model
    weights: dict[str, np.ndarray]  # the whole model's
    body_weights: dict[str, np.ndarray]
    head_kernel: np.ndarray  # [features, 10], float64
    head_bias: np.ndarray  # [10], float64
    weights_sha256: str


# ---------------------------------------------------------------- the shipped classifier


def _package_bytes(name: str) -> bytes:
    try:
        return resources.files(CLASSIFIER_PACKAGE).joinpath(name).read_bytes()
    except (OSError, ModuleNotFoundError) as err:
        raise ScoringError(f"the shipped MNIST classifier is incomplete: cannot read {name} ({err})",
                           hint="reinstall specc") from None


@functools.lru_cache(maxsize=1)
def classifier() -> Classifier:
    """Load (once) the shipped spec and weights and split off the softmax head."""
    from safetensors.numpy import load

    from . import loads
    from .weights import check_weights

    spec = _package_bytes(SPEC_FILE).decode("utf-8")
    model = loads(spec, SPEC_FILE)["mnist_classifier"]
    raw = _package_bytes(WEIGHTS_FILE)
    weights = load(raw)
    try:
        check_weights(model, weights)
    except ValueError as err:
        raise ScoringError(f"the shipped MNIST classifier is damaged: {err}", hint="reinstall specc") from None
    cut = [layer.name for layer in model.layers].index(FEATURES_LAYER) + 1
    head = model.layers[-1]
    if head.kind != "Dense" or any(layer.kind != "Dropout" for layer in model.layers[cut:-1]):
        raise ScoringError(f"{SPEC_FILE}: the features layer must feed the Dense softmax head directly")
    body = Model(f"{model.name}_features", model.input_shape, model.layers[:cut])
    return Classifier(model, body, weights, {key: weights[key] for key in body.weight_specs()},
                      weights[head.weight_key("kernel")].astype(np.float64),
                      weights[head.weight_key("bias")].astype(np.float64),
                      hashlib.sha256(raw).hexdigest())


@functools.lru_cache(maxsize=1)
def reference_statistics() -> tuple[np.ndarray, np.ndarray, dict]:
    """(mu, sigma, metadata) of the real MNIST test set's features, as shipped."""
    from safetensors.numpy import load

    raw = _package_bytes(REFERENCE_FILE)
    stats = load(raw)
    # The safetensors header: a little-endian u64 length, then JSON with "__metadata__".
    header = json.loads(raw[8:8 + int.from_bytes(raw[:8], "little")])
    return stats["mu"], stats["sigma"], header.get("__metadata__", {})


# ---------------------------------------------------------------- images in, features and probabilities out


def prepare_images(images, range: Sequence[float] = (0.0, 1.0)) -> np.ndarray:
    """[N, 1, 28, 28] float32 in [0, 1] from N 28x28 images in `range`
    (any per-sample shape of 784 values); tiny excursions are clipped."""
    lo, hi = (float(v) for v in range)
    if not hi > lo:
        raise ScoringError(f"range must be (low, high) with low < high, got {tuple(range)}")
    x = np.asarray(images, dtype=np.float32)
    if x.ndim < 2 or math.prod(x.shape[1:]) != math.prod(IMAGE_SHAPE):
        raise ScoringError(f"MNIST scores need 28x28 grayscale images, [N, 1, 28, 28]; got shape {list(x.shape)}")
    if len(x) < 2:
        raise ScoringError(f"MNIST scores need at least 2 images (FID needs a covariance), got {len(x)}")
    if not np.isfinite(x).all():
        raise ScoringError("the images contain NaN or infinite values; the generator has diverged")
    slack = RANGE_SLACK * (hi - lo)
    if x.min() < lo - slack or x.max() > hi + slack:
        raise ScoringError(f"the images hold values in [{x.min():g}, {x.max():g}], outside the stated range "
                           f"[{lo:g}, {hi:g}]", hint="pass the range the images are in, e.g. range=(-1, 1) "
                                                     "for a tanh generator")
    x = np.clip((x - lo) / (hi - lo), 0.0, 1.0)
    return x.reshape((len(x),) + IMAGE_SHAPE)


def features_and_log_probs(images, backend: str = "jax", range: Sequence[float] = (0.0, 1.0),
                           batch: int = 500) -> tuple[np.ndarray, np.ndarray]:
    """Penultimate features [N, 128] and log p(y|x) [N, 10], float64, from one
    forward pass of the shipped classifier per batch."""
    if batch < 1:
        raise ScoringError(f"batch must be positive, got {batch}")
    x = prepare_images(images, range)
    net = classifier()
    be = backends.get(backend)
    features = np.concatenate([be.run(net.body, net.body_weights, x[i:i + batch]) for i in np.arange(0, len(x), batch)])
    features = features.astype(np.float64)
    logits = features @ net.head_kernel + net.head_bias
    log_probs = logits - _logsumexp(logits)
    return features, log_probs


def _logsumexp(logits: np.ndarray) -> np.ndarray:
    top = logits.max(axis=1, keepdims=True)
    return top + np.log(np.exp(logits - top).sum(axis=1, keepdims=True))


# ---------------------------------------------------------------- the two scores


def inception_score(log_probs: np.ndarray, splits: int = 1) -> float:
    """exp(E_x KL(p(y|x) || p(y))), averaged over `splits` equal parts (the
    marginal p(y) is taken within each part). Takes log-probabilities, so no
    epsilon is needed for p(y|x); p(y) is a mean of positive numbers."""
    log_probs = np.asarray(log_probs, dtype=np.float64)
    if not 1 <= splits <= len(log_probs):
        raise ScoringError(f"splits must be between 1 and the number of samples ({len(log_probs)}), got {splits}")
    scores = []
    for part in np.array_split(log_probs, splits):
        probs = np.exp(part)
        log_marginal = np.log(np.maximum(probs.mean(axis=0), np.finfo(np.float64).tiny))
        kl = (probs * (part - log_marginal)).sum(axis=1)
        scores.append(math.exp(kl.mean()))
    return float(np.mean(scores))


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance (N - 1, as pytorch-fid) of features [N, D], float64."""
    features = np.asarray(features, dtype=np.float64)
    return features.mean(axis=0), np.cov(features, rowvar=False)


def _sqrt_psd(matrix: np.ndarray) -> np.ndarray:
    """The symmetric square root of a symmetric PSD matrix (eigh; rounding
    negatives clipped to 0)."""
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T


def trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """Tr((S1 S2)^(1/2)) for symmetric PSD S1, S2, without scipy.

    S1 S2 = A (A S2) with A = S1^(1/2), and A (A S2) has the eigenvalues of
    (A S2) A = A S2 A (XY and YX share eigenvalues), which is symmetric PSD:
    its eigenvalues are real and >= 0 up to rounding, so clipping the tiny
    negatives is exact in the limit. scipy's sqrtm of the non-symmetric S1 S2
    needs an offset and drops imaginary parts for singular covariances, which
    dead ReLU units make common here."""
    root = _sqrt_psd(np.asarray(sigma1, dtype=np.float64))
    middle = root @ np.asarray(sigma2, dtype=np.float64) @ root
    values = np.linalg.eigvalsh((middle + middle.T) / 2)
    return float(np.sqrt(np.clip(values, 0.0, None)).sum())


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """|mu1 - mu2|^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)): the squared Wasserstein-2
    distance of two Gaussians, so rounding below 0 is returned as 0."""
    diff = np.asarray(mu1, dtype=np.float64) - np.asarray(mu2, dtype=np.float64)
    value = diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_sqrt_product(sigma1, sigma2)
    return max(0.0, float(value))


def mnist_scores(images, backend: str = "jax", range: Sequence[float] = (0.0, 1.0), batch: int = 500) -> dict:
    """{"mnist_is", "mnist_fid", "samples"} of N generated 28x28 images whose
    pixels lie in `range` ((-1, 1) for a tanh generator). FID is against the
    shipped statistics of the real MNIST test set. Use 10,000 samples for
    figures to report: FID is biased upward for small N."""
    features, log_probs = features_and_log_probs(images, backend, range, batch)
    mu, sigma = feature_statistics(features)
    ref_mu, ref_sigma, _ = reference_statistics()
    return {"mnist_is": inception_score(log_probs), "mnist_fid": frechet_distance(mu, sigma, ref_mu, ref_sigma),
            "samples": len(features)}


# ---------------------------------------------------------------- real data: the ceiling and the reference


def real_data_ceiling(backend: str = "jax", samples: int = 10_000, batch: int = 500, data_dir=None) -> dict:
    """The best a generator can hope for, in the same units as `mnist_scores`:
    `mnist_is` of the first `samples` real TEST images, `mnist_fid` of the first
    `samples` real TRAINING images against the test statistics (the test set
    against itself would be 0 by construction)."""
    from .data import load_dataset

    data = load_dataset(Call("mnist", {}), IMAGE_SHAPE, data_dir=data_dir)
    _, test_log_probs = features_and_log_probs(data.x_test[:samples], backend, batch=batch)
    train = mnist_scores(data.x_train[:samples], backend, batch=batch)
    return {"mnist_is": inception_score(test_log_probs), "mnist_fid": train["mnist_fid"],
            "samples": min(samples, len(data.x_test))}


def write_reference_statistics(path=None, backend: str = "torch", data_dir=None) -> str:
    """Compute and write mu and sigma (float64) of the features of all 10,000
    real MNIST test images; by default into the package, beside the weights."""
    from safetensors.numpy import save_file

    from .data import load_dataset

    data = load_dataset(Call("mnist", {}), IMAGE_SHAPE, data_dir=data_dir)
    features, _ = features_and_log_probs(data.x_test, backend)
    mu, sigma = feature_statistics(features)
    if path is None:
        path = resources.files(CLASSIFIER_PACKAGE).joinpath(REFERENCE_FILE)
    metadata = {"data": f"MNIST test set, all {len(features)} images, pixels / 255",
                "features": f"output of layer '{FEATURES_LAYER}' of {SPEC_FILE}, inference mode",
                "covariance": "numpy.cov(features, rowvar=False), N - 1 normalisation, float64",
                "backend": backend, "weights_sha256": classifier().weights_sha256}
    save_file({"mu": mu, "sigma": sigma}, str(path), metadata=metadata)
    reference_statistics.cache_clear()
    return str(path)
