"""Main job: loads the shipped Fashion-MNIST model and writes a class-conditional PNG grid, one row
per class (T-shirt/top, Trouser, Pullover, Dress, Coat, Sandal, Shirt, Sneaker, Bag, Ankle boot).

    python python/sample.py --per_class 10 --output samples.png
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from fractal_ext.checkpoint import load_model  # noqa: E402
from fractal_ext.cli import USER_ERRORS, integer, integer_list, writable_output  # noqa: E402
from fractal_ext.configs import SHIPPED_MODEL, SMALL_SAMPLING  # noqa: E402
from fractal_ext.generation import sample_labels, save_grid_png  # noqa: E402


def main(argv=None):
    defaults = SMALL_SAMPLING["fractalmar_fmnist32"]
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model_path", default=str(SHIPPED_MODEL), help="safetensors file with its config")
    parser.add_argument("--classes", type=integer_list, default=None, help="comma-separated class ids (default: all)")
    parser.add_argument("--per_class", type=integer(1), default=10)
    parser.add_argument("--num_iter_list", type=integer_list, default=list(defaults["num_iter_list"]))
    parser.add_argument("--cfg", type=float, default=defaults["cfg"])
    parser.add_argument("--cfg_schedule", default=defaults["cfg_schedule"], choices=("linear", "constant"))
    parser.add_argument("--temperature", type=float, default=defaults["temperature"])
    parser.add_argument("--filter_threshold", type=float, default=defaults["filter_threshold"])
    parser.add_argument("--batch_size", type=integer(1), default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scale", type=integer(1), default=3, help="upscale the PNG by this factor (nearest)")
    parser.add_argument("--output", default="samples.png")
    parser.add_argument("--threads", type=integer(1), default=1,
                        help="CPU threads (1 is fastest for the small batches of sampling on a shared CPU)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    try:
        model = load_model(args.model_path)
        writable_output(args.output)
        classes = list(range(model.config.class_num)) if args.classes is None else args.classes
        labels = torch.tensor(classes, dtype=torch.long).repeat_interleave(args.per_class)
        start = time.time()
        images = sample_labels(model, labels, args.num_iter_list, args.cfg, args.cfg_schedule, args.temperature,
                               args.filter_threshold, generator=torch.Generator().manual_seed(args.seed),
                               batch_size=args.batch_size)
    except USER_ERRORS as error:  # bad input: a message, not a traceback
        parser.error(str(error))
    path = save_grid_png(images, rows=len(classes), path=args.output, scale=args.scale)
    print(f"wrote {path}: {len(classes)} classes x {args.per_class} samples in {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
