"""`fractal-sample`: class-conditional images as a PNG grid (and optionally one PNG per image).

Without a checkpoint it samples the shipped Fashion-MNIST model, one row per class: the main job.

    fractal-sample --per_class 10 --output samples.png
    fractal-sample --model fractalmar_in64 --checkpoint checkpoint-last.pth --labels 207,360 --seed 0 --output_dir out
"""
import argparse
import sys
import time

import torch

from fractal_ext.cli.common import device, integer, integer_list, run_or_report, seed, writable_output
from fractal_ext.io.checkpoints import load_model
from fractal_ext.io.images import grid_shape, image_format, save_grid_png, save_samples
from fractal_ext.models import NAMED_CONFIGS, default_sampling_settings
from fractal_ext.models.registry import SHIPPED_MODEL
from fractal_ext.sampler import generate

SETTINGS = ("num_iter_list", "cfg", "cfg_schedule", "temperature", "filter_threshold")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fractal-sample", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", "--model_path", dest="checkpoint", default=str(SHIPPED_MODEL),
                        help="official checkpoint .pth or fractal_ext .safetensors (default: the shipped model)")
    parser.add_argument("--model", default=None, choices=sorted(NAMED_CONFIGS),
                        help="named architecture (needed for an official .pth without args.model)")
    parser.add_argument("--skip_checkpoint_checks", action="store_true",
                        help="load a checkpoint whose hash, CRCs or values fail the checks (knowingly)")
    parser.add_argument("--labels", type=integer_list, default=None,
                        help="class labels, e.g. 1,2,3 (default: the first 10 classes)")
    parser.add_argument("--classes", dest="labels", type=integer_list, help=argparse.SUPPRESS)  # older name
    parser.add_argument("--per_class", type=integer(1), default=None,
                        help="images per label (default: 10 without --labels, else 1)")
    parser.add_argument("--num_per_class", dest="per_class", type=integer(1), help=argparse.SUPPRESS)  # older name
    parser.add_argument("--num_iter_list", type=integer_list, default=None, help="default: the model's settings")
    parser.add_argument("--cfg", type=float, default=None, help="classifier-free guidance scale (>= 1)")
    parser.add_argument("--cfg_schedule", choices=["linear", "constant"], default=None)
    parser.add_argument("--temperature", type=float, default=None,
                        help="multiplies the logits, as in the official code: above 1 is sharper, below 1 noisier")
    parser.add_argument("--filter_threshold", type=float, default=None)
    parser.add_argument("--seed", type=seed, default=0)
    parser.add_argument("--batch_size", type=integer(1), default=50, help="labels per sampling batch")
    parser.add_argument("--greedy", action="store_true", help="most likely token instead of a random draw")
    parser.add_argument("--raster_order", action="store_true", help="MAR levels in raster order")
    parser.add_argument("--implementation", choices=["fast", "eager"], default="fast")
    parser.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"], default="auto",
                        help="fast path: auto = fp16 on CUDA (the official evaluation's autocast), fp32 on CPU")
    parser.add_argument("--cuda_graphs", choices=["auto", "on", "off"], default="auto",
                        help="replay fixed-shape steps as CUDA graphs (auto: on for CUDA)")
    parser.add_argument("--device", type=device, default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=integer(1), default=1,
                        help="CPU threads (default 1: 2.1x faster than 2 when the other core is busy, 14%% slower on idle cores)")
    parser.add_argument("--output", default=None, help="the grid PNG (default samples.png without --output_dir)")
    parser.add_argument("--output_dir", default=None, help="write grid.png and one PNG per image here")
    parser.add_argument("--columns", type=integer(1), default=None, help="images per grid row (default: per_class)")
    parser.add_argument("--scale", type=integer(1), default=None,
                        help="upscale the grid by this factor, nearest (default: 3 below 64 pixels, else 1)")
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
    model = load_model(args.checkpoint, model_name=args.model, device=args.device,
                       verify=not args.skip_checkpoint_checks)
    classes = args.labels if args.labels is not None else list(range(min(model.num_classes, 10)))
    per_class = args.per_class or (1 if args.labels is not None else 10)
    labels = [label for label in classes for _ in range(per_class)]
    columns = args.columns or per_class
    size = model.config.img_size_list[0]
    scale = args.scale or (3 if size < 64 else 1)
    grid_shape(len(labels), size, size, columns, scale=scale if args.output is not None else 1)  # before the work
    settings = {k: getattr(args, k) for k in SETTINGS if getattr(args, k) is not None}
    resolved = {**default_sampling_settings(model), **settings}
    print(f"sampling {len(labels)} images with {resolved} on {args.device}", flush=True)
    generator = torch.Generator(device=args.device).manual_seed(args.seed)
    start = time.perf_counter()
    images = generate(model, labels, batch_size=args.batch_size, generator=generator, greedy=args.greedy,
                      raster_order=args.raster_order, implementation=args.implementation,
                      precision=args.precision, cuda_graphs={"auto": None, "on": True, "off": False}[args.cuda_graphs],
                      progress=True, **settings)
    seconds = time.perf_counter() - start
    written = []
    if args.output_dir is not None:
        written.append(save_samples(images, labels, args.output_dir, columns))
    if args.output is not None:
        written.append(save_grid_png(images, rows=-(-len(labels) // columns), path=args.output, scale=scale))
    print(f"wrote {', '.join(map(str, written))}: {len(labels)} images in {seconds:.1f} s, "
          f"{len(labels) / seconds:.3f} images/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
