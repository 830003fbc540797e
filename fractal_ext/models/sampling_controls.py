"""The random choices of sampling, and the two deterministic modes that replace them."""
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class SamplingControls:
    """generator: source of every random choice (orders, draws); None uses torch's default one.
    greedy: take the most likely token instead of a random draw.
    raster_order: MAR levels generate tokens in the order 0, 1, ..., L-1 instead of a random one
    (the masking schedule then keeps the first tokens of that order masked the longest)."""

    generator: torch.Generator | None = None
    greedy: bool = False
    raster_order: bool = False
