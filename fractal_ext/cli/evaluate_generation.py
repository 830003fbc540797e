"""`fractal-eval generation`: sample quality of a model: class-balanced samples in resumable
shards, then FID, Inception Score and precision / recall against a reference set, as one JSON
line (also written to OUTPUT_DIR/metrics.json and appended to OUTPUT_DIR/evaluation.log) and a grid
of the first samples (OUTPUT_DIR/samples.png).

    fractal-eval generation --num_images 10000 --output_dir runs/fid --reference fashion_mnist:test
    torchrun --nproc_per_node=4 python/evaluate.py generation --model_path fractalmar_in64.pth \\
        --model fractalmar_in64 --num_images 50000 --output_dir runs/in64 --reference adm_in64_stats.npz
    fractal-eval generation --score_only --output_dir runs/fid --reference fashion_mnist:test

Every process samples its share of fixed chunks (the images do not depend on the number of
processes); a run that is stopped continues where it was when started again with the same command.
Feature spaces: `inception` (the FID Inception, from a local file: --inception_path) and, for
Fashion-MNIST models, `classifier` (the shipped domain classifier's features). docs/evaluation.md.
"""
import argparse
import json
import sys
import time
from pathlib import Path

import torch

from fractal_ext.cli.common import integer, run_or_report, writable_output
from fractal_ext.cli.sampling_options import add_model_arguments, add_sampling_arguments, load_the_model
from fractal_ext.evaluation import shards
from fractal_ext.evaluation.reference import DEFAULT_CACHE_DIR
from fractal_ext.evaluation.setup import check_reference, default_feature_spaces, load_feature_spaces


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fractal-eval generation", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(parser)
    add_sampling_arguments(parser)  # --batch_size is the chunk size: the images of one shard, sampled together
    parser.add_argument("--num_images", type=integer(1), default=None,
                        help="samples in all, a multiple of the number of classes (required unless --score_only)")
    parser.add_argument("--output_dir", required=True, help="the shards, run.json, metrics.json, samples.png")
    parser.add_argument("--reference", default="fashion_mnist:test",
                        help="an .npz of mu and sigma (the official statistics files), fashion_mnist:train|test, "
                             "or folder:PATH (class sub-folders of images); default fashion_mnist:test")
    parser.add_argument("--num_reference", type=integer(4), default=None,
                        help="N images of a dataset reference, evenly spaced over it (default all)")
    parser.add_argument("--feature_spaces", default=None,
                        help="comma-separated from inception, classifier (default: both for 10-class 28x28 or "
                             "32x32 models, else inception)")
    parser.add_argument("--inception_path", default=None, help="the FID Inception TorchScript file (default_1.pt)")
    parser.add_argument("--classifier_path", default=None, help="the Fashion-MNIST classifier (default: the shipped one)")
    parser.add_argument("--cache_dir", default=str(DEFAULT_CACHE_DIR), help="cached statistics of dataset references")
    parser.add_argument("--grid", type=integer(0), default=100, help="samples in samples.png (0: none)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--score_only", action="store_true",
                      help="score the shards of a finished run (run.json says what they are); no model needed")
    mode.add_argument("--sample_only", action="store_true",
                      help="sample the shards and stop (score them later, or elsewhere, with --score_only)")
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    return run_or_report(parser, run, parser.parse_args(argv))


def run(args) -> int:
    from fractal_ext.training.distributed import cleanup, init_distributed

    torch.set_num_threads(args.threads)
    info = init_distributed(args.device)
    args.device = str(info.device)  # cuda:LOCAL_RANK under torchrun
    try:
        return _run(args, info)
    finally:
        cleanup(info)


def _run(args, info) -> int:
    from fractal_ext.training.distributed import all_gather_objects, barrier, cleanup

    output_dir = writable_output(args.output_dir, is_dir=True)
    model, sampling_seconds, sampled = None, 0.0, 0
    if args.score_only:
        run_description = shards.recorded_run(output_dir)
        if run_description is None:
            raise ValueError(f"--score_only: {output_dir} has no {shards.RUN_FILE}; it holds no run to score")
    else:
        if args.num_images is None:
            raise ValueError("--num_images is required (unless --score_only)")
        model = load_the_model(args)
        run_description = shards.describe_run(model, args.num_images, args.batch_size, args.seed, _settings(model, args),
                                              dict(greedy=args.greedy, raster_order=args.raster_order,
                                                   implementation=args.implementation, precision=args.precision))
    height, _, channels = run_description.image_shape
    spaces = []
    if not args.sample_only:
        names = (args.feature_spaces.split(",") if args.feature_spaces
                 else default_feature_spaces(run_description.class_num, height))
        spaces = load_feature_spaces(names, run_description.class_num, height, info.device, args.inception_path,
                                     args.classifier_path)  # a missing network fails here, before sampling
        check_reference(args.reference, spaces, height, channels)
        if run_description.num_images < 2:
            raise ValueError("--num_images: the metrics need at least 2 images (a covariance)")
    if not args.score_only:
        shards.claim_folder(output_dir, run_description)
        start = time.perf_counter()
        done = shards.sample_chunks(model, run_description, output_dir, info.rank, info.world_size,
                                    cuda_graphs={"auto": None, "on": True, "off": False}[args.cuda_graphs])
        sampling_seconds = time.perf_counter() - start
        sampled = sum(all_gather_objects(sum(len(run_description.chunk_images(chunk)) for chunk in done), info))
        sampling_seconds = max(all_gather_objects(sampling_seconds, info))
        barrier(info)
    # The main process scores alone: the other processes leave the group now, so that no collective
    # waits on a long scoring (NCCL's watchdog would abort it after 10 minutes).
    cleanup(info)
    if args.sample_only:
        if info.is_main:
            print(json.dumps(dict(output_dir=str(output_dir), num_images=run_description.num_images,
                                  sampled_images=sampled, sampling_seconds=round(sampling_seconds, 1))), flush=True)
        return 0
    if not info.is_main:
        return 0
    return _score(args, run_description, spaces, output_dir, sampled, sampling_seconds)


def _settings(model, args) -> dict:
    from fractal_ext.cli.sampling_options import sampling_settings
    from fractal_ext.models import default_sampling_settings

    settings = {**default_sampling_settings(model), **sampling_settings(args)}
    return {key: (list(value) if isinstance(value, tuple) else value) for key, value in settings.items()}


def _score(args, run_description, spaces, output_dir: Path, sampled: int, sampling_seconds: float) -> int:
    from fractal_ext.evaluation.quality import score_in_spaces
    from fractal_ext.io.atomic import write_atomically
    from fractal_ext.io.images import save_grid_png

    images, _ = shards.load_samples(output_dir, run_description)
    height = run_description.image_shape[0]
    result = dict(output_dir=str(output_dir), num_images=len(images), settings=run_description.settings,
                  seed=run_description.seed)
    if sampled:
        result.update(sampled_images=sampled, sampling_seconds=round(sampling_seconds, 1),
                      images_per_s=round(sampled / sampling_seconds, 3))
    start = time.perf_counter()
    result.update(score_in_spaces(images, spaces, args.reference, args.num_reference, args.cache_dir))
    result["scoring_seconds"] = round(time.perf_counter() - start, 1)
    if args.grid:
        shown = images[: args.grid]
        columns = min(len(shown), max(1, round(len(shown) ** 0.5)))
        save_grid_png(shown, rows=-(-len(shown) // columns), path=output_dir / "samples.png",
                      scale=3 if height < 64 else 1)
    line = json.dumps(result)
    write_atomically(output_dir / "metrics.json", lambda stream: stream.write(line.encode() + b"\n"))
    with open(output_dir / "evaluation.log", "a") as log:
        log.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line}\n")
    print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
