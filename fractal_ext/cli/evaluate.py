"""`fractal-eval`: the unconditional NLL in bits per dimension of a model over a dataset split;
`fractal-eval generation ...`: sample quality (FID, IS, precision / recall; see its --help).

    fractal-eval --model_path fractal_ext/assets/fractalmar_fmnist32.safetensors --split test
    fractal-eval --model_path checkpoint-last.pth --model fractalmar_in64 \
        --dataset imagefolder --data_path /data/imagenet64 --img_size 64

MAR models average --num_passes forward passes per batch (default 10, as the official
evaluation; 1 for all-AR models). Prints one JSON line. Under torchrun every process takes a
share of the batches; batch b's random masks come from (--seed, b), so the result does not depend
on the number of processes.
"""
import argparse
import json
import math
import sys
import time

from fractal_ext.cli.common import device, integer, run_or_report, seed
from fractal_ext.evaluation.nll import bits_per_dim_of_batches, combine_batches, default_num_passes
from fractal_ext.io.checkpoints import load_model
from fractal_ext.io.datasets import build_dataset, iterate_batches


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fractal-eval", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model_path", required=True, help="our .safetensors, a training checkpoint or an official .pth")
    parser.add_argument("--model", default=None, help="architecture name for an official .pth without args")
    parser.add_argument("--skip_checkpoint_checks", action="store_true",
                        help="load a checkpoint whose hash, CRCs or values fail the checks (knowingly)")
    parser.add_argument("--dataset", choices=("fashion_mnist", "imagefolder"), default="fashion_mnist")
    parser.add_argument("--data_path", default=None)
    parser.add_argument("--split", choices=("train", "test"), default="test", help="imagefolder: train/ or val/")
    parser.add_argument("--img_size", type=integer(1), default=None, help="default: the model's")
    parser.add_argument("--batch_size", type=integer(1), default=100)
    parser.add_argument("--num_images", type=integer(1), default=None, help="first N images of the split (default all)")
    parser.add_argument("--num_passes", type=integer(1), default=None, help="forward passes per batch (default 10 MAR, 1 AR)")
    parser.add_argument("--seed", type=seed, default=0)
    parser.add_argument("--device", type=device, default="cpu")
    return parser


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["generation"]:  # the sample-quality mode (FID, IS, precision / recall)
        from fractal_ext.cli import evaluate_generation

        return evaluate_generation.main(argv[1:])
    parser = build_parser()
    return run_or_report(parser, run, parser.parse_args(argv))


def run(args) -> int:
    from fractal_ext.training.distributed import cleanup, init_distributed

    info = init_distributed(args.device)
    try:
        return _run(args, info)
    finally:
        cleanup(info)


def _run(args, info) -> int:
    from fractal_ext.training.distributed import all_gather_objects

    model = load_model(args.model_path, args.model, info.device, verify=not args.skip_checkpoint_checks)
    size = model.config.img_size_list[0]
    if args.img_size is not None and args.img_size != size:
        raise ValueError(f"--img_size {args.img_size} does not match the model, which takes {size}x{size} images")
    dataset = build_dataset(args.dataset, args.split, args.data_path, size, model.config.channels)
    start = time.time()
    batches = (model.normalisation.normalise(images) for images, _ in
               iterate_batches(dataset, args.batch_size, args.num_images))
    num_passes = default_num_passes(model) if args.num_passes is None else args.num_passes
    mine = bits_per_dim_of_batches(model, batches, num_passes, args.seed, info.rank, info.world_size, progress=True)
    everyone = [entry for share in all_gather_objects(mine, info) for entry in share]
    if not info.is_main:
        return 0
    result = combine_batches(everyone, num_passes)
    result.update(model_path=str(args.model_path), dataset=args.dataset, split=args.split,
                  processes=info.world_size, seconds=round(time.time() - start, 1))
    print(json.dumps(result))
    if not math.isfinite(result["bits_per_dim"]):
        print(f"fractal-eval: the model's NLL is {result['bits_per_dim']} on these images: its weights or the data "
              "are broken", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
