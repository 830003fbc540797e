"""The metric implementations against independent computations: closed forms for Gaussians,
scipy's general matrix square root, and torch-fidelity (the official evaluation's library) on the
same features."""
import numpy as np
import pytest
import torch

from fractal_ext.evaluation.metrics import FeatureStatistics, frechet_distance, inception_score, precision_recall

torch_fidelity = pytest.importorskip("torch_fidelity")


def random_covariance(rng, dim, rank=None):
    factor = rng.normal(size=(dim, rank or dim))
    return factor @ factor.T / (rank or dim)


def test_frechet_distance_of_diagonal_gaussians_is_the_closed_form():
    rng = np.random.default_rng(0)
    variances_1, variances_2 = rng.uniform(0.1, 3, 16), rng.uniform(0.1, 3, 16)
    mu_1, mu_2 = rng.normal(size=16), rng.normal(size=16)
    expected = ((mu_1 - mu_2) ** 2).sum() + ((np.sqrt(variances_1) - np.sqrt(variances_2)) ** 2).sum()
    got = frechet_distance(FeatureStatistics(mu_1, np.diag(variances_1)), FeatureStatistics(mu_2, np.diag(variances_2)))
    assert got == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize("rank", [None, 20])  # full-rank, and singular (fewer images than features)
def test_frechet_distance_agrees_with_scipy_sqrtm_and_torch_fidelity(rank):
    import scipy.linalg
    from torch_fidelity.metric_fid import fid_statistics_to_metric

    rng = np.random.default_rng(1)
    first = FeatureStatistics(rng.normal(size=64), random_covariance(rng, 64, rank))
    second = FeatureStatistics(rng.normal(size=64) * 0.5, random_covariance(rng, 64, rank))
    root = scipy.linalg.sqrtm(first.sigma @ second.sigma).real
    difference = first.mu - second.mu
    by_scipy = difference @ difference + np.trace(first.sigma + second.sigma - 2 * root)
    by_fidelity = fid_statistics_to_metric(dict(mu=first.mu, sigma=first.sigma),
                                           dict(mu=second.mu, sigma=second.sigma), False)["frechet_inception_distance"]
    got = frechet_distance(first, second)
    assert got == pytest.approx(by_scipy, rel=1e-6, abs=1e-6)
    assert got == pytest.approx(by_fidelity, rel=1e-6, abs=1e-6)
    assert frechet_distance(first, first) == pytest.approx(0, abs=1e-5)  # traces of about 64


def test_feature_statistics_are_the_mean_and_unbiased_covariance():
    features = np.random.default_rng(2).normal(size=(50, 4))
    features = features.astype(np.float32).astype(np.float64)  # what float32 features hold
    statistics = FeatureStatistics.of(torch.from_numpy(features).float())
    np.testing.assert_allclose(statistics.mu, features.mean(0), rtol=1e-12)
    np.testing.assert_allclose(statistics.sigma, np.cov(features, rowvar=False), rtol=1e-12)


@pytest.mark.parametrize("mu, sigma, message", [
    (np.zeros(3), np.eye(4), "sigma must be"),
    (np.zeros((3, 1)), np.eye(3), "mu must be a vector"),
    (np.array([0, np.nan, 0]), np.eye(3), "finite"),
])
def test_bad_statistics_are_refused(mu, sigma, message):
    with pytest.raises(ValueError, match=message):
        FeatureStatistics(mu, sigma)


def test_statistics_of_different_feature_spaces_are_refused():
    with pytest.raises(ValueError, match="same feature space"):
        frechet_distance(FeatureStatistics(np.zeros(3), np.eye(3)), FeatureStatistics(np.zeros(4), np.eye(4)))


def test_inception_score_agrees_with_torch_fidelity():
    from torch_fidelity.metric_isc import isc_features_to_metric

    logits = torch.randn(1000, 17, generator=torch.Generator().manual_seed(3), dtype=torch.float64) * 3
    expected = isc_features_to_metric(logits, splits=10, shuffle=True, rng_seed=2020)
    mean, std = inception_score(logits)
    assert mean == pytest.approx(expected["inception_score_mean"], rel=1e-12)
    assert std == pytest.approx(expected["inception_score_std"], rel=1e-9)


def test_inception_score_known_answers():
    # Confident predictions spread evenly over K classes: exp(log K) = K. Identical predictions: 1.
    confident = torch.full((320, 8), -50.0, dtype=torch.float64)  # 4 splits of 80: 10 images of each class
    confident[torch.arange(320), torch.arange(320) % 8] = 50.0
    assert inception_score(confident, splits=4, shuffle_seed=None)[0] == pytest.approx(8.0, rel=1e-9)
    assert inception_score(torch.randn(1, 8).repeat(400, 1), splits=4)[0] == pytest.approx(1.0, abs=1e-12)


def test_precision_recall_agree_with_torch_fidelity():
    from torch_fidelity.metric_prc import calculate_precision_recall_part

    generator = torch.Generator().manual_seed(4)
    real = torch.randn(300, 8, generator=generator, dtype=torch.float64)
    generated = torch.randn(200, 8, generator=generator, dtype=torch.float64) * 1.3 + 0.4
    expected = calculate_precision_recall_part(generated, real, neighborhood=3, batch_size=64)  # (precision, recall)
    assert precision_recall(real, generated, neighbours=3, batch_size=64) == pytest.approx(expected, abs=1e-6)  # theirs: float32 means
    assert 0 < expected[0] < 1 and 0 < expected[1] < 1  # a case where the radii matter


def test_precision_recall_known_answers():
    real = torch.randn(100, 5, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    assert precision_recall(real, real.clone()) == (1.0, 1.0)
    assert precision_recall(real, real + 1000) == (0.0, 0.0)
    with pytest.raises(ValueError, match="same feature space"):
        precision_recall(real, real[:, :4])
    with pytest.raises(ValueError, match="more than 3"):
        precision_recall(real[:3], real)
