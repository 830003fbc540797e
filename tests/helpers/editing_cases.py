"""Inputs of the editing tests: tiny reference models, random known-pixel masks (blobs that cut
across tokens at every level, so partly known tokens recurse) and a completion call by path."""
import torch

from fractal_ext.models.known import KnownPixels
from fractal_ext.settings import SamplingControls
from reference_models import build_reference_model, normalised_images, reference_entry


def random_masks(batch: int, size: int, seed: int, per_image: bool = True) -> torch.Tensor:
    """[batch, size, size] bool: per image a random fraction of known pixels in 2x2 blocks and
    single pixels, so tokens at every level are fully, partly or not at all known."""
    generator = torch.Generator().manual_seed(seed)
    count = batch if per_image else 1
    blocks = torch.rand(count, size // 2, size // 2, generator=generator)
    fraction = torch.rand(count, 1, 1, generator=generator) * 0.8 + 0.1
    mask = (blocks < fraction).repeat_interleave(2, 1).repeat_interleave(2, 2)
    mask ^= torch.rand(count, size, size, generator=generator) < 0.05
    return mask.expand(batch, -1, -1).clone()


def complete_tiny(name, mask, *, cfg=None, implementation="fast", greedy=True, seed=0, paths=None,
                  images=None, labels=None):
    """Completes `images` (default: random ones) of tiny reference model `name` under `mask` with
    the model's recorded sampling settings; greedy runs take MAR levels in raster order."""
    model = build_reference_model(name)
    args = dict(reference_entry(name)["sample_args"])
    if cfg is not None:
        args["cfg"] = cfg
    batch, size = mask.shape[0], mask.shape[-1]
    images = normalised_images(batch, size, seed=11) if images is None else images
    labels = torch.arange(batch) % model.num_classes if labels is None else labels
    cond_list = model.build_cond_list(labels, args["cfg"])
    controls = SamplingControls(torch.Generator().manual_seed(seed), greedy, raster_order=greedy)
    sample_args = (cond_list, args["num_iter_list"], args["cfg"], args["cfg_schedule"], args["temperature"],
                   args["filter_threshold"])
    known = KnownPixels(images, mask)
    if implementation == "fast":
        out = model.fast_sampler().sample(*sample_args, controls, cuda_graphs=False, paths=paths, known=known)
    else:
        out = model.sample(*sample_args, controls=controls, implementation="eager", known=known)
    return out, images
