"""Sample-quality metrics on feature vectors: Fréchet distance (FID when the features are the FID
Inception's), Inception Score, and precision / recall of Kynkäänniemi et al. (2019).

The definitions follow the evaluators the papers' numbers come from (torch-fidelity, which the
official fractalgen evaluation calls): float64 statistics, IS over
10 splits of a fixed shuffle, k = 3 nearest neighbours for the manifolds of precision and recall.
docs/evaluation.md says what each number means.
"""
from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class FeatureStatistics:
    """Mean [D] and covariance [D, D] (float64) of a set of feature vectors: all that the Fréchet
    distance needs, and what reference statistics files (`mu`, `sigma`) hold."""

    mu: np.ndarray
    sigma: np.ndarray

    def __post_init__(self):
        mu, sigma = np.asarray(self.mu, dtype=np.float64), np.asarray(self.sigma, dtype=np.float64)
        if mu.ndim != 1:
            raise ValueError(f"feature statistics: mu must be a vector [D], got shape {mu.shape}")
        if sigma.shape != (mu.shape[0], mu.shape[0]):
            raise ValueError(f"feature statistics: sigma must be [D, D] = [{mu.shape[0]}, {mu.shape[0]}] for a "
                             f"mu of {mu.shape[0]} features, got shape {sigma.shape}")
        if not (np.isfinite(mu).all() and np.isfinite(sigma).all()):
            raise ValueError("feature statistics: mu and sigma must be finite")
        object.__setattr__(self, "mu", mu)
        object.__setattr__(self, "sigma", sigma)

    @property
    def dim(self) -> int:
        return self.mu.shape[0]

    @classmethod
    def of(cls, features) -> "FeatureStatistics":
        """Statistics of features [N, D] (N >= 2): the mean and the unbiased covariance."""
        features = _as_float64(features, "features")
        if features.shape[0] < 2:
            raise ValueError(f"feature statistics need at least 2 feature vectors, got {features.shape[0]}")
        return cls(features.mean(axis=0), np.cov(features, rowvar=False))


def frechet_distance(first: FeatureStatistics, second: FeatureStatistics) -> float:
    """|mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2)): the Fréchet distance between the Gaussians
    fitted to two feature sets.

    tr((S1 S2)^(1/2)) is computed as tr((A S2 A)^(1/2)) with A = S1^(1/2): the same eigenvalues (S1 S2
    is similar to A S2 A), but of a symmetric matrix, so that two symmetric eigendecompositions give
    it, stable also for the singular covariances of fewer images than features (the reference
    evaluators' general square root, scipy's `sqrtm`, is the tests' oracle)."""
    if first.dim != second.dim:
        raise ValueError(f"frechet_distance: the statistics have {first.dim} and {second.dim} features; "
                         "both must come from the same feature space")
    difference = first.mu - second.mu
    values, vectors = np.linalg.eigh(first.sigma)
    root_first = (vectors * np.sqrt(values.clip(min=0))) @ vectors.T
    product = root_first @ second.sigma @ root_first
    trace_of_root = np.sqrt(np.linalg.eigvalsh((product + product.T) / 2).clip(min=0)).sum()
    return float(difference @ difference + np.trace(first.sigma) + np.trace(second.sigma) - 2 * trace_of_root)


def inception_score(logits, splits: int = 10, shuffle_seed: int | None = 2020) -> tuple[float, float]:
    """exp(E_x KL(p(y|x) || p(y))) of class logits [N, K], as mean and standard deviation over
    `splits` equal parts (the images shuffled with numpy's RandomState(shuffle_seed) first, as the
    reference evaluator does; None keeps the order)."""
    logits = torch.as_tensor(_as_float64(logits, "logits"))
    if splits < 1 or splits > logits.shape[0]:
        raise ValueError(f"inception_score: splits must be in 1..{logits.shape[0]} (the number of images), got {splits}")
    if shuffle_seed is not None:
        logits = logits[np.random.RandomState(shuffle_seed).permutation(logits.shape[0])]
    log_p = logits.log_softmax(dim=1)
    scores = []
    for part in range(splits):
        rows = log_p[part * len(log_p) // splits : (part + 1) * len(log_p) // splits]
        log_marginal = rows.exp().mean(dim=0).log()
        kl = (rows.exp() * (rows - log_marginal)).sum(dim=1).mean()
        scores.append(float(kl.exp()))
    return float(np.mean(scores)), float(np.std(scores))


def precision_recall(real, generated, neighbours: int = 3, batch_size: int = 1000) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al., 2019) of feature sets [N, D] and [M, D]:
    precision is the fraction of generated vectors inside the real manifold (within the distance of
    some real vector to its k-th nearest real neighbour), recall the fraction of real vectors inside
    the generated manifold. Distances in float64, computed in blocks of `batch_size` rows (a block of
    1000 rows against 50,000 vectors is 400 MB)."""
    real = torch.as_tensor(_as_float64(real, "real features"))
    generated = torch.as_tensor(_as_float64(generated, "generated features"))
    if real.shape[1] != generated.shape[1]:
        raise ValueError(f"precision_recall: the real features have {real.shape[1]} dimensions, the generated "
                         f"{generated.shape[1]}; both must come from the same feature space")
    for name, features in (("real", real), ("generated", generated)):
        if features.shape[0] <= neighbours:
            raise ValueError(f"precision_recall: {neighbours} nearest neighbours need more than {neighbours} "
                             f"{name} feature vectors, got {features.shape[0]}")
    return (_fraction_inside(real, generated, neighbours, batch_size),
            _fraction_inside(generated, real, neighbours, batch_size))


def _fraction_inside(manifold: torch.Tensor, queries: torch.Tensor, neighbours: int, batch_size: int) -> float:
    """Fraction of `queries` within radius(m) of some manifold vector m, radius(m) being the distance
    from m to its k-th nearest neighbour in the manifold (itself excluded: the k+1-th smallest)."""
    radii = torch.cat([torch.cdist(manifold[i : i + batch_size], manifold).kthvalue(neighbours + 1, dim=1).values
                       for i in range(0, len(manifold), batch_size)])
    inside = torch.cat([(torch.cdist(queries[i : i + batch_size], manifold) <= radii[None]).any(dim=1)
                        for i in range(0, len(queries), batch_size)])
    return float(inside.double().mean())


def _as_float64(values, name: str) -> np.ndarray:
    if torch.is_tensor(values):
        values = values.detach().cpu().double().numpy()
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2 or values.shape[0] == 0 or values.shape[1] == 0:
        raise ValueError(f"{name} must be a non-empty matrix [N, D], got shape {values.shape}")
    if not np.isfinite(values).all():
        raise ValueError(f"{name} must be finite (found NaN or infinity)")
    return values
