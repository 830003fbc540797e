"""Seeds of independent pieces of work (sampling chunks, evaluation batches) derived from one
user seed, so that a piece's randomness does not depend on who does it or in which order."""
import numpy as np


def derived_seed(seed: int, index: int) -> int:
    """A 64-bit generator seed for piece `index` of a run seeded `seed`, through numpy's
    SeedSequence: nearby seeds and indices give unrelated streams."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1, dtype=np.uint64)[0])
