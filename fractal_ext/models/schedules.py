"""Per-step schedules of the generators, computed on the host (no device synchronisation)."""
import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class MarStep:
    mask_len_next: int  # tokens still masked after this step (clamped as the official code does)
    num_predicted: int  # tokens generated at this step
    cfg: float  # guidance scale of this step


def linear_or_constant_cfg(cfg: float, cfg_schedule: str, progress: float) -> float:
    if cfg_schedule == "linear":
        return 1 + (cfg - 1) * progress
    if cfg_schedule == "constant":
        return cfg
    raise ValueError(f"cfg_schedule must be 'linear' or 'constant', got {cfg_schedule!r}")


def mar_schedule(seq_len: int, num_iter: int, cfg: float = 1.0, cfg_schedule: str = "constant") -> list[MarStep]:
    """MAR cosine masking schedule: min(seq_len, num_iter) steps; step k keeps
    floor(L * cos(pi/2 * (k+1)/n)) tokens masked, clamped to [1, still masked - 1]; the last step
    predicts every token still masked. Linear CFG follows the fraction of tokens unmasked."""
    if num_iter < 1:
        raise ValueError(f"num_iter must be >= 1, got {num_iter}")
    steps = min(seq_len, num_iter)
    masked = seq_len
    schedule = []
    for k in range(steps):
        # numpy's cos, as the official code uses, so the floors agree bit for bit.
        mask_len = int(np.floor(seq_len * np.cos(math.pi / 2.0 * (k + 1) / steps)))
        mask_len = max(1, min(masked - 1, mask_len))
        predicted = masked if k == steps - 1 else masked - mask_len
        cfg_k = linear_or_constant_cfg(cfg, cfg_schedule, (seq_len - mask_len) / seq_len)
        schedule.append(MarStep(mask_len, predicted, cfg_k))
        masked -= predicted
    return schedule


def ar_cfg_schedule(seq_len: int, cfg: float, cfg_schedule: str) -> list[float]:
    """Guidance scale of each AR step: linear 1 + (cfg - 1) * (s + 1) / L, or constant."""
    return [linear_or_constant_cfg(cfg, cfg_schedule, (s + 1) / seq_len) for s in range(seq_len)]
