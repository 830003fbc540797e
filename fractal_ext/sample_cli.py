"""`fractal-sample`: class-conditional images from a checkpoint, as a PNG grid and per-image PNGs.

    fractal-sample --model fractalmar_in64 --checkpoint checkpoint-last.pth --labels 207,360 --seed 0
"""
import argparse
import sys
import time

import torch

from fractal_ext.checkpoint import load_model
from fractal_ext.cli import USER_ERRORS, device, integer, integer_list, writable_output
from fractal_ext.images import save_samples
from fractal_ext.models import OFFICIAL_ARCHITECTURES
from fractal_ext.sampler import default_sampling_settings, generate


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fractal-sample", description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, choices=sorted(OFFICIAL_ARCHITECTURES),
                        help="official architecture (needed for an official .pth without args.model)")
    parser.add_argument("--checkpoint", required=True, help="official checkpoint .pth or fractal_ext .safetensors")
    parser.add_argument("--labels", type=integer_list, default=None, help="class labels, e.g. 1,2,3")
    parser.add_argument("--num_per_class", type=integer(1), default=1, help="images per label")
    parser.add_argument("--num_iter_list", type=integer_list, default=None)
    parser.add_argument("--cfg", type=float, default=None)
    parser.add_argument("--cfg_schedule", choices=["linear", "constant"], default=None)
    parser.add_argument("--temperature", type=float, default=None)
    parser.add_argument("--filter_threshold", type=float, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch_size", type=integer(1), default=16, help="labels per sampling batch")
    parser.add_argument("--greedy", action="store_true", help="most likely token instead of a random draw")
    parser.add_argument("--raster_order", action="store_true", help="MAR levels in raster order")
    parser.add_argument("--implementation", choices=["fast", "eager"], default="fast")
    parser.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"], default="auto",
                        help="fast path: auto = fp16 on CUDA (the official evaluation's autocast), fp32 on CPU")
    parser.add_argument("--cuda_graphs", choices=["auto", "on", "off"], default="auto",
                        help="replay fixed-shape steps as CUDA graphs (auto: on for CUDA)")
    parser.add_argument("--device", type=device, default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--output_dir", default="samples")
    parser.add_argument("--columns", type=integer(1), default=None, help="images per grid row")
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return run(args)
    except USER_ERRORS as error:  # bad input: a message, not a traceback
        parser.error(str(error))


def run(args) -> int:
    model = load_model(args.checkpoint, model_name=args.model, device=args.device)
    writable_output(args.output_dir, is_dir=True)
    labels = args.labels if args.labels is not None else list(range(min(model.num_classes, 8)))
    labels = [label for label in labels for _ in range(args.num_per_class)]
    settings = {k: getattr(args, k) for k in ("num_iter_list", "cfg", "cfg_schedule", "temperature", "filter_threshold")
                if getattr(args, k) is not None}
    resolved = {**default_sampling_settings(model), **settings}
    print(f"sampling {len(labels)} images with {resolved} on {args.device}", flush=True)
    generator = torch.Generator(device=args.device).manual_seed(args.seed)
    start = time.perf_counter()
    images = generate(model, labels, batch_size=args.batch_size, generator=generator, greedy=args.greedy,
                      raster_order=args.raster_order, implementation=args.implementation,
                      precision=args.precision, cuda_graphs={"auto": None, "on": True, "off": False}[args.cuda_graphs],
                      progress=True, **settings)
    seconds = time.perf_counter() - start
    grid = save_samples(images, labels, args.output_dir, args.columns)
    print(f"wrote {grid} and {len(labels)} images; {len(labels) / seconds:.3f} images/s ({seconds:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
