"""Chi-square goodness of fit of observed token counts against exact probabilities."""
import torch


def chi_square_p_value(counts: torch.Tensor, probs: torch.Tensor, min_expected: float = 5.0) -> float:
    """counts [V] of N draws, probs [V] (float64). Bins with an expected count below
    `min_expected` are pooled into one. A draw in a zero-probability bin gives p = 0."""
    counts, probs = counts.double(), probs.double()
    total = counts.sum()
    if bool((counts[probs == 0] > 0).any()):
        return 0.0
    expected = probs * total
    small = expected < min_expected
    observed = torch.cat([counts[~small], counts[small].sum().reshape(1)])
    expected = torch.cat([expected[~small], expected[small].sum().reshape(1)])
    keep = expected > 0
    observed, expected = observed[keep], expected[keep]
    statistic = ((observed - expected) ** 2 / expected).sum()
    dof = max(int(keep.sum()) - 1, 1)
    return float(torch.special.gammaincc(torch.tensor(dof / 2, dtype=torch.float64), statistic / 2))
