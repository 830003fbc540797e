"""What a sampling or training call takes besides the weights, shared by the eager modules, the
fast sampler and the training loop (none of them imports another for it): the precision modes,
the controls of sampling's random choices, and the validation of sampling arguments."""
import math
import operator
from dataclasses import dataclass

import torch

# `precision` of sampling and training: fp32, or the matmuls under autocast in bf16 / fp16.
AUTOCAST_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class SamplingControls:
    """generator: source of every random choice (orders, draws); None uses torch's default one.
    greedy: take the most likely token instead of a random draw.
    raster_order: MAR levels generate tokens in the order 0, 1, ..., L-1 instead of a random one
    (the masking schedule then keeps the first tokens of that order masked the longest)."""

    generator: torch.Generator | None = None
    greedy: bool = False
    raster_order: bool = False


def validate_sampling_args(model, cond_list, num_iter_list, cfg, cfg_schedule, temperature, filter_threshold):
    """ValueError naming the first sampling argument `model.sample` cannot take (the eager and the
    fast path check the same way)."""
    num_generators = model.num_fractal_levels - 1
    if len(num_iter_list) != num_generators:
        raise ValueError(f"num_iter_list needs one entry per generator level ({num_generators}), got {list(num_iter_list)}")
    if not all(_is_integer(n) and n >= 1 for n in num_iter_list):
        raise ValueError(f"num_iter_list entries must be integers >= 1, got {list(num_iter_list)}")
    if not (math.isfinite(float(cfg)) and float(cfg) >= 1.0):
        raise ValueError(f"cfg must be a finite number >= 1.0, got {cfg}")
    if cfg_schedule not in ("linear", "constant"):
        raise ValueError(f"cfg_schedule must be 'linear' or 'constant', got {cfg_schedule!r}")
    if not (math.isfinite(float(temperature)) and float(temperature) > 0):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature}")
    if not 0.0 <= float(filter_threshold) <= 1.0:
        raise ValueError(f"filter_threshold must be in [0, 1], got {filter_threshold}")
    # The modules make fp32 tensors of their own (norms, logits, pixel values), as the official ones
    # do, so cast weights fail deep inside: reduced precision is autocast, as in the official code.
    weight_dtypes = {p.dtype for p in model.parameters()}
    if weight_dtypes != {torch.float32}:
        raise ValueError(f"sampling needs float32 weights, got {sorted(map(str, weight_dtypes))}; for reduced "
                         "precision keep fp32 weights and pass precision='bf16' or 'fp16' (autocast)")
    if len(cond_list) < model.config.num_conds:
        raise ValueError(f"cond_list needs {model.config.num_conds} tensors, got {len(cond_list)}")
    expected = (cond_list[0].shape[0] if isinstance(cond_list[0], torch.Tensor) else None, model.class_emb.embedding_dim)
    device = model.class_emb.weight.device
    for i, cond in enumerate(cond_list[: model.config.num_conds]):
        if not (isinstance(cond, torch.Tensor) and cond.dim() == 2 and tuple(cond.shape) == expected
                and cond.dtype == torch.float32 and cond.device == device):
            described = (f"{cond.dtype} {tuple(cond.shape)} on {cond.device}" if isinstance(cond, torch.Tensor)
                         else type(cond).__name__)
            raise ValueError(f"cond_list[{i}] must be a float32 [rows, {expected[1]}] tensor on {device} (rows as "
                             f"cond_list[0]; model.build_cond_list makes them), got {described}")
    rows = cond_list[0].shape[0]
    if rows == 0:
        raise ValueError("cond_list has no rows: nothing to sample")
    if float(cfg) != 1.0 and rows % 2:
        raise ValueError(f"with cfg != 1 cond_list holds conditional then unconditional rows (an even count), got {rows}")


def _is_integer(value) -> bool:
    try:
        operator.index(value)  # int, numpy and 0-d torch integers; not floats (range() refuses them)
    except TypeError:
        return False
    return True
