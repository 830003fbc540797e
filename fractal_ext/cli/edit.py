"""`fractal-edit`: regenerates part of an image (inpainting, outpainting, uncropping), under its
own label or another one (class-conditional editing). Known pixels are kept bit-exactly.

    fractal-edit shirt.png --box 8,8,24,24 --labels 0,1,2,3,4,5,6,7,8,9 --output_dir edits
    fractal-edit shirt.png --mask mask.png --labels 6 --output_dir edits    (white = generate)
    fractal-edit shirt.png --outpaint 6 --labels 6 --output_dir edits       (a 6-pixel border)
    fractal-edit crop.png --uncrop 16 --labels 6 --output_dir edits         (keep the centre 16x16)

The image has the model's channels (grey converts to RGB, RGB to RGBA) and size (for --uncrop N it may also be the N x N crop
itself). Writes completion_<index>_class_<label>.png and grid.png: one row per completion, the
image before, the pixels to generate shown grey, the completion.
"""
import argparse
import sys
import time

import torch

from fractal_ext.cli.animation import CanvasRecorder
from fractal_ext.cli.common import integer, integer_list, run_or_report, writable_output
from fractal_ext.cli.sampling_options import (add_grid_scale_argument, add_model_arguments, add_sampling_arguments,
                                              generation_options, grid_scale, load_the_model, sampling_settings)
from fractal_ext.editing import border_mask, box_mask, centre_crop_mask, complete
from fractal_ext.io.images import read_binary_mask, read_image, save_grid_png, save_png
from fractal_ext.models import default_sampling_settings

UNKNOWN_SHOWN_AS = 128  # the grey of the "mask" column


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fractal-edit", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("image", help="the image to edit (PNG, JPEG, ...)")
    region = parser.add_mutually_exclusive_group(required=True)
    region.add_argument("--mask", help="black-and-white image of the image's size: white = generate, black = keep")
    region.add_argument("--box", type=integer_list, help="x0,y0,x1,y1: generate columns [x0, x1) of rows [y0, y1)")
    region.add_argument("--outpaint", type=integer(1), metavar="N", help="generate a border N pixels wide")
    region.add_argument("--uncrop", type=integer(1), metavar="N", help="keep the centred N x N square, generate the rest")
    labels = parser.add_mutually_exclusive_group(required=True)
    labels.add_argument("--labels", type=integer_list, help="class label(s) to complete under, e.g. 6 or 0,1,2")
    labels.add_argument("--unconditional", action="store_true", help="no class: the unconditional model")
    parser.add_argument("--per_label", type=integer(1), default=1, help="completions per label (other draws)")
    add_model_arguments(parser)
    add_sampling_arguments(parser)
    parser.add_argument("--output_dir", required=True, help="where the completions and grid.png go")
    parser.add_argument("--animate", action="store_true",
                        help="also write process.gif: the completions after every level-0 step")
    add_grid_scale_argument(parser)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    return run_or_report(parser, run, parser.parse_args(argv))


def known_region(args, size: int) -> torch.Tensor:
    """The known-pixel mask [size, size] (True = keep) the options ask for."""
    if args.mask is not None:
        generate_here = read_binary_mask(args.mask)
        if tuple(generate_here.shape) != (size, size):
            raise ValueError(f"{args.mask}: the mask is {generate_here.shape[1]}x{generate_here.shape[0]}, "
                             f"the image {size}x{size}")
        known = ~generate_here
    elif args.box is not None:
        if len(args.box) != 4:
            raise ValueError(f"--box takes x0,y0,x1,y1, got {len(args.box)} numbers")
        known = box_mask(size, *args.box)
    elif args.outpaint is not None:
        known = border_mask(size, args.outpaint)
    else:
        known = centre_crop_mask(size, args.uncrop)
    if bool(known.all()):
        raise ValueError("the mask marks no pixel to generate")
    return known


def input_image(args, size: int, channels: int) -> torch.Tensor:
    """uint8 [size, size, channels]; an --uncrop N image may be the N x N crop, placed in the centre."""
    image = read_image(args.image, channels)
    height, width = image.shape[:2]
    if args.uncrop is not None and (height, width) == (args.uncrop, args.uncrop):
        canvas = torch.zeros(size, size, channels, dtype=torch.uint8)
        start = (size - args.uncrop) // 2
        canvas[start:start + height, start:start + width] = image
        return canvas
    if (height, width) != (size, size):
        expected = f"{size}x{size}" + (f" or {args.uncrop}x{args.uncrop}" if args.uncrop is not None else "")
        raise ValueError(f"{args.image}: the image is {width}x{height}, the model takes {expected}")
    return image


def run(args) -> int:
    torch.set_num_threads(args.threads)
    writable_output(args.output_dir, is_dir=True)
    model = load_the_model(args)
    size = model.config.img_size_list[0]
    image = input_image(args, size, model.config.channels)
    known = known_region(args, size)
    settings = {**default_sampling_settings(model), **sampling_settings(args)}
    if args.unconditional:
        if args.cfg is not None and args.cfg != 1.0:
            raise ValueError(f"unconditional images have no guidance: cfg must be 1.0, got {args.cfg}")
        settings["cfg"] = 1.0
        labels = None
        count = args.per_label
    else:
        labels = [label for label in args.labels for _ in range(args.per_label)]
        model.check_labels(torch.tensor(labels))
        count = len(labels)
    scale = grid_scale(args, size)
    print(f"completing {count} image(s), {int((~known).sum())} of {size * size} pixels each, with {settings} "
          f"on {args.device}", flush=True)
    start = time.perf_counter()
    images = image.expand(count, -1, -1, -1)
    recorder = CanvasRecorder(model) if args.animate else None
    completions = complete(model, images, known, labels, on_step=recorder, **generation_options(args))
    seconds = time.perf_counter() - start
    for index, completion in enumerate(completions):
        label = "none" if labels is None else labels[index]
        save_png(completion, f"{args.output_dir}/completion_{index:04d}_class_{label}.png")
    shown = torch.where(known[..., None], image, torch.tensor(UNKNOWN_SHOWN_AS, dtype=torch.uint8))
    rows = torch.stack([torch.stack([image, shown, completion.cpu()]) for completion in completions]).flatten(0, 1)
    grid = save_grid_png(rows, rows=count, path=f"{args.output_dir}/grid.png", scale=scale)
    if recorder is not None:
        grid = f"{grid} and {recorder.save(f'{args.output_dir}/process.gif', columns=count, scale=scale)}"
    print(f"wrote {count} completion(s) and {grid} in {seconds:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
