"""Unconditional negative log-likelihood in bits per dimension (eval-mode loss / ln 2; MAR levels
average several forward passes with random masks, as the official evaluation does)."""
import math

import torch


@torch.no_grad()
def bits_per_dim(model, images: torch.Tensor, labels: torch.Tensor | None = None, num_passes: int = 1,
                 generator: torch.Generator | None = None) -> float:
    """Eval-mode loss / ln 2 of one batch of normalised images [B, C, H, W], averaged over
    `num_passes` forward passes (MAR levels draw a random mask each pass; the official evaluation
    averages 10). Labels do not matter: in eval mode every row uses the unconditional latent."""
    if num_passes < 1:
        raise ValueError(f"num_passes must be >= 1, got {num_passes}")
    channels = model.config.channels
    if images.dim() != 4 or images.shape[1] != channels:
        raise ValueError(f"images must be [B, {channels}, H, W] for this model, got {tuple(images.shape)}")
    expected = model.config.img_size_list[0]
    if images.shape[-2:] != (expected, expected):
        raise ValueError(f"images must be {expected}x{expected} for this model, got {tuple(images.shape[-2:])}")
    was_training = model.training
    model.eval()
    if labels is None:
        labels = torch.zeros(images.shape[0], dtype=torch.long, device=images.device)
    try:
        losses = [float(model(images, labels, generator=generator)) for _ in range(num_passes)]
    finally:
        model.train(was_training)
    return sum(losses) / len(losses) / math.log(2)


def default_num_passes(model) -> int:
    """10 forward passes per batch when a level is MAR (random masks; the official evaluation
    averages 10), 1 for all-AR models (deterministic up to the tie-breaking noise)."""
    kinds = model.config.generator_type_list[: len(model.config.img_size_list) - 1]
    return 10 if "mar" in kinds else 1


def dataset_bits_per_dim(model, batches, num_passes: int | None = None, seed: int = 0, progress: bool = False) -> dict:
    """Unconditional NLL over a dataset split: `bits_per_dim` of each batch of normalised images
    (an iterable of [B, C, H, W] tensors, or of (images, labels) pairs), averaged with the batch
    sizes as weights; batch b's random masks come from (seed, b), as under torchrun
    (`bits_per_dim_of_batches`). Returns {'bits_per_dim', 'images', 'num_passes'}."""
    num_passes = default_num_passes(model) if num_passes is None else num_passes
    return combine_batches(bits_per_dim_of_batches(model, batches, num_passes, seed, progress=progress), num_passes)


@torch.no_grad()
def bits_per_dim_of_batches(model, batches, num_passes: int | None = None, seed: int = 0, rank: int = 0,
                            world_size: int = 1, progress: bool = False) -> list[tuple[int, float, int]]:
    """This process's share of an NLL evaluation that does not depend on the number of processes:
    batch b (of normalised images, or (images, labels) pairs) is evaluated by rank b % world_size,
    its random masks drawn from a generator seeded from (seed, b) only. Returns (b, bits per dim,
    images) for each of its batches; `combine_batches` turns everyone's lists into the result."""
    from fractal_ext.evaluation.seeds import derived_seed

    num_passes = default_num_passes(model) if num_passes is None else num_passes
    device = next(model.parameters()).device
    results = []
    if progress:
        from tqdm import tqdm

        batches = tqdm(batches, desc="bits/dim", unit="batch", dynamic_ncols=True, disable=rank != 0)
    for index, batch in enumerate(batches):
        if index % world_size != rank:
            continue
        images = (batch[0] if isinstance(batch, (tuple, list)) else batch).to(device)
        generator = torch.Generator(device=device).manual_seed(derived_seed(seed, index))
        results.append((index, bits_per_dim(model, images, num_passes=num_passes, generator=generator),
                        images.shape[0]))
    return results


def combine_batches(per_batch: list[tuple[int, float, int]], num_passes: int) -> dict:
    """The dataset's bits per dim from (batch index, bits per dim, images) of every batch, summed in
    batch order (so the result is the same however the batches were shared out)."""
    if not per_batch:
        raise ValueError("dataset_bits_per_dim: no images")
    ordered = sorted(per_batch)
    total, count = 0.0, 0
    for _, value, images in ordered:
        total += value * images
        count += images
    return {"bits_per_dim": total / count, "images": count, "num_passes": num_passes}
