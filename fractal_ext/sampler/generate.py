"""Labels in, images out: the convenience API over the fast sampler (and `FractalGen.sample`)."""
from functools import partial

import torch

from fractal_ext.models import FractalGen, default_sampling_settings
from fractal_ext.models.known import KnownPixels
from fractal_ext.settings import SamplingControls


@torch.no_grad()
def generate(model: FractalGen, labels, *, batch_size: int = 16, output: str = "uint8",
             generator: torch.Generator | None = None, greedy: bool = False, raster_order: bool = False,
             implementation: str = "fast", precision: str = "fp32", cuda_graphs: bool | None = None,
             progress: bool = False, known: KnownPixels | None = None, on_step=None, **settings) -> torch.Tensor:
    """Class labels -> images, in chunks of `batch_size` labels (CFG doubles each chunk's rows).

    `labels` None: unconditional images (the `fake_latent` condition, no guidance), as many as
    `known` holds. `known` (editing, fractal_ext.editing.complete builds it): one image's known
    pixels per label; they are kept and the rest is generated around them. `on_step(first, images,
    generated)`: after every level-0 step of a chunk, its canvas (see FractalGen.sample) and the
    index of the chunk's first image.

    `settings` override the model's defaults (`num_iter_list`, `cfg`, `cfg_schedule`,
    `temperature`: it multiplies the logits, as in the official code, so above 1 is sharper and
    below 1 noisier; `filter_threshold`). `output`: "uint8" -> [B, H, W, C] uint8, "normalised" ->
    [B, C, H, W] float as `model.sample` returns. `progress` shows a bar over the level-0 steps.
    `precision` ("fp32", "bf16", "fp16") applies to the fast path; "auto" is fp16 on CUDA (the
    official evaluation samples under fp16 autocast), else fp32.
    `cuda_graphs` (fast path): None replays fixed-shape steps as CUDA graphs on a GPU."""
    if precision == "auto":
        precision = "fp16" if next(model.parameters()).is_cuda else "fp32"
    if output not in ("uint8", "normalised"):
        raise ValueError(f"output must be 'uint8' or 'normalised', got {output!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    unknown = set(settings) - {"num_iter_list", "cfg", "cfg_schedule", "temperature", "filter_threshold"}
    if unknown:
        raise ValueError(f"unknown sampling settings: {sorted(unknown)}")
    device = next(model.parameters()).device
    args = {**default_sampling_settings(model), **settings}
    if labels is None:
        if known is None:
            raise ValueError("labels=None (unconditional) needs `known`, which says how many images")
        if float(args["cfg"]) != 1.0 and "cfg" in settings:
            raise ValueError(f"unconditional images have no guidance: cfg must be 1.0, got {args['cfg']}")
        args["cfg"] = 1.0
        count = known.pixels.shape[0]
    else:
        labels = torch.as_tensor(labels, device=device)
        if labels.shape == (0,):  # an empty list arrives as float32
            labels = labels.long()
        model.check_labels(labels)
        count = labels.shape[0]
    if known is not None and known.pixels.shape[0] != count:
        raise ValueError(f"known holds {known.pixels.shape[0]} images for {count} labels")
    controls = SamplingControls(generator, greedy, raster_order)
    chunks = [slice(start, start + batch_size) for start in range(0, count, batch_size)]
    bar = _progress_bar(model, args, len(chunks)) if progress else None
    images = []
    for chunk in chunks:
        if labels is None:
            cond_list = model.unconditional_cond_list(len(range(count)[chunk]))
        else:
            cond_list = model.build_cond_list(labels[chunk], args["cfg"])
        known_chunk = None if known is None else KnownPixels(known.pixels[chunk], known.mask[chunk])
        chunk_step = None if on_step is None else partial(on_step, chunk.start)
        if implementation == "fast":
            images.append(model.fast_sampler().sample(
                cond_list, args["num_iter_list"], args["cfg"], args["cfg_schedule"], args["temperature"],
                args["filter_threshold"], controls, on_top_level_step=(lambda canvas: bar.update()) if bar else None,
                precision=precision, cuda_graphs=cuda_graphs, known=known_chunk, on_step=chunk_step))
        else:
            images.append(model.sample(cond_list, args["num_iter_list"], args["cfg"], args["cfg_schedule"],
                                       args["temperature"], args["filter_threshold"], controls=controls,
                                       implementation=implementation, known=known_chunk, on_step=chunk_step))
            if bar:
                bar.update(_top_level_steps(model, args))
    if bar:
        bar.close()
    result = torch.cat(images) if images else torch.empty(0, model.config.channels, *(model.config.img_size_list[0],) * 2)
    if output == "uint8":
        return model.normalisation.to_uint8(result).permute(0, 2, 3, 1).contiguous()
    return result


def _top_level_steps(model, args):
    seq_len = (model.config.img_size_list[0] // model.config.img_size_list[1]) ** 2
    if model.config.generator_type_list[0] == "ar":
        return seq_len
    return min(seq_len, int(args["num_iter_list"][0]))


def _progress_bar(model, args, num_chunks):
    from tqdm.auto import tqdm

    return tqdm(total=num_chunks * _top_level_steps(model, args), unit="step", desc="sampling", leave=False)

