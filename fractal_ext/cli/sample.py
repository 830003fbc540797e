"""`fractal-sample`: class-conditional images as a PNG grid (and optionally one PNG per image).

Without a checkpoint it samples the shipped Fashion-MNIST model, one row per class: the main job.

    fractal-sample --per_class 10 --output samples.png
    fractal-sample --model fractalmar_in64 --checkpoint checkpoint-last.pth --labels 207,360 --seed 0 --output_dir out
"""
import argparse
import sys
import time

import torch

from fractal_ext.cli.animation import CanvasRecorder
from fractal_ext.cli.common import integer, integer_list, run_or_report, writable_output
from fractal_ext.cli.sampling_options import (add_grid_scale_argument, add_model_arguments, add_sampling_arguments,
                                              generation_options, grid_scale, load_the_model, sampling_settings)
from fractal_ext.io.images import grid_shape, image_format, save_grid_png, save_samples
from fractal_ext.models import default_sampling_settings
from fractal_ext.sampler import generate


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fractal-sample", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(parser)
    parser.add_argument("--labels", type=integer_list, default=None,
                        help="class labels, e.g. 1,2,3 (default: the first 10 classes)")
    parser.add_argument("--classes", dest="labels", type=integer_list, help=argparse.SUPPRESS)  # older name
    parser.add_argument("--per_class", type=integer(1), default=None,
                        help="images per label (default: 10 without --labels, else 1)")
    parser.add_argument("--num_per_class", dest="per_class", type=integer(1), help=argparse.SUPPRESS)  # older name
    add_sampling_arguments(parser)
    parser.add_argument("--output", default=None, help="the grid PNG (default samples.png without --output_dir)")
    parser.add_argument("--output_dir", default=None, help="write grid.png and one PNG per image here")
    parser.add_argument("--columns", type=integer(1), default=None, help="images per grid row (default: per_class)")
    parser.add_argument("--animate", default=None, metavar="OUT.gif",
                        help="also write the generation process: the grid after every level-0 step, as a GIF")
    add_grid_scale_argument(parser)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    return run_or_report(parser, run, parser.parse_args(argv))


def run(args) -> int:
    torch.set_num_threads(args.threads)
    if args.output is None and args.output_dir is None:
        args.output = "samples.png"
    if args.output is not None:
        writable_output(args.output)
        image_format(args.output)
    if args.output_dir is not None:
        writable_output(args.output_dir, is_dir=True)
    if args.animate is not None:
        writable_output(args.animate)
        if not args.animate.lower().endswith(".gif"):
            raise ValueError(f"--animate {args.animate}: the animation is a GIF, the file name must end in .gif")
    model = load_the_model(args)
    classes = args.labels if args.labels is not None else list(range(min(model.num_classes, 10)))
    per_class = args.per_class or (1 if args.labels is not None else 10)
    labels = [label for label in classes for _ in range(per_class)]
    columns = args.columns or per_class
    size = model.config.img_size_list[0]
    scale = grid_scale(args, size)
    grid_shape(len(labels), size, size, columns, scale=scale if args.output is not None else 1)  # before the work
    resolved = {**default_sampling_settings(model), **sampling_settings(args)}
    print(f"sampling {len(labels)} images with {resolved} on {args.device}", flush=True)
    start = time.perf_counter()
    recorder = CanvasRecorder(model) if args.animate else None
    images = generate(model, labels, on_step=recorder, **generation_options(args))
    seconds = time.perf_counter() - start
    written = []
    if args.output_dir is not None:
        written.append(save_samples(images, labels, args.output_dir, columns))
    if args.output is not None:
        written.append(save_grid_png(images, rows=-(-len(labels) // columns), path=args.output, scale=scale))
    if recorder is not None:
        written.append(recorder.save(args.animate, columns, scale))
    print(f"wrote {', '.join(map(str, written))}: {len(labels)} images in {seconds:.1f} s, "
          f"{len(labels) / seconds:.3f} images/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
