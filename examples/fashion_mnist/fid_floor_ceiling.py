"""Where a Fashion-MNIST model's FID sits: the floor and the ceiling of `fractal-eval generation`'s
metrics, scored the same way (the same feature spaces, the same reference, its cached statistics).

- floor: N real Fashion-MNIST training images, evenly spaced over the training split (as
  `dataset_images` selects them; the split is in no class order, so the classes are near-balanced):
  what a perfect model's N samples would score against the test split;
- ceiling: N samples of the per-pixel histogram baseline (examples/fashion_mnist/baselines.py, the
  likelihood baseline of evidence.py), class-conditional: one `PixelHistogram` (grey value per
  pixel, add-1 smoothing) fitted on each class's training images, sampled class-balanced with a
  fixed seed in the generation's label layout (image i has label i // (N / 10)). Every pixel is
  drawn independently: the right grey values in the right places, and no shapes.

    python examples/fashion_mnist/fid_floor_ceiling.py --num_images 10000 --threads 2 \\
        --output runs/fid_floor_ceiling.json

Both are scored against all 10,000 test images (`fashion_mnist:test`) in the `inception` and
`classifier` feature spaces; the reference statistics are computed once and cached in `--cache_dir`,
where `fractal-eval generation` reads them too. The images take the model's size and channels
(`--model_path`, default the shipped model). Prints one line per set and writes the metrics as JSON.
"""
import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import torch  # noqa: E402

from examples.fashion_mnist.baselines import PixelHistogram  # noqa: E402
from fractal_ext.cli.common import integer, seed, writable_output  # noqa: E402
from fractal_ext.evaluation.quality import score_in_spaces  # noqa: E402
from fractal_ext.evaluation.reference import DEFAULT_CACHE_DIR, dataset_images  # noqa: E402
from fractal_ext.evaluation.setup import FEATURE_SPACES, load_feature_spaces  # noqa: E402
from fractal_ext.io.atomic import write_atomically  # noqa: E402
from fractal_ext.io.checkpoints import load_model  # noqa: E402
from fractal_ext.io.datasets import FashionMNIST  # noqa: E402
from fractal_ext.models.registry import SHIPPED_MODEL  # noqa: E402

REFERENCE = "fashion_mnist:test"


def histogram_samples(train: FashionMNIST, num_images: int, class_num: int, generator: torch.Generator,
                      alpha: float = 1.0) -> torch.Tensor:
    """uint8 [N, H, W, C]: image i drawn from the per-pixel histogram of class i // (N / class_num),
    every pixel independently (the histogram's own smoothed distribution, `PixelHistogram.log_probs`)."""
    per_class = num_images // class_num
    size, channels = train.images.shape[-1], train.channels
    samples = []
    for label in range(class_num):
        images, _ = train.batch((train.labels == label).nonzero().flatten())
        histogram = PixelHistogram(size, size, "tied", alpha=alpha, image_channels=channels).fit([images])
        probs = histogram.log_probs().exp()  # [1, H, W, 256]: one grey value per pixel
        values = torch.multinomial(probs.reshape(-1, 256), per_class, replacement=True, generator=generator)
        grey = values.T.reshape(per_class, size, size, 1).to(torch.uint8)
        samples.append(grey.expand(-1, -1, -1, channels))
    return torch.cat(samples).contiguous()


def summary(name: str, metrics: dict) -> str:
    parts = []
    for space in FEATURE_SPACES:
        if space not in metrics:
            continue
        m = metrics[space]
        text = f"{space} FID {m['frechet_distance']:.3f}"
        if m["inception_score"] is not None:
            text += f", IS {m['inception_score']:.3f} +- {m['inception_score_std']:.3f}"
        if m["precision"] is not None:
            text += f", precision {m['precision']:.4f}, recall {m['recall']:.4f}"
        parts.append(text)
    return f"{name}: " + "; ".join(parts) + f" ({metrics['seconds']:.0f} s)"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num_images", type=integer(10), default=10000,
                        help="images in each set, a multiple of 10 (the ceiling is class-balanced)")
    parser.add_argument("--output", required=True, help="the metrics, as JSON")
    parser.add_argument("--threads", type=integer(1), default=1, help="CPU threads")
    parser.add_argument("--cache_dir", default=str(DEFAULT_CACHE_DIR), help="cached statistics of the reference")
    parser.add_argument("--num_reference", type=integer(4), default=None,
                        help="test images in the reference, evenly spaced (default all 10,000; fewer for a quick try)")
    parser.add_argument("--model_path", default=str(SHIPPED_MODEL), help="the model whose size and channels to use")
    parser.add_argument("--seed", type=seed, default=0, help="the histogram samples' generator seed")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    output = writable_output(args.output)
    start = time.perf_counter()

    config = load_model(args.model_path).config
    size, channels, class_num = config.img_size_list[0], config.channels, config.class_num
    if args.num_images % class_num:
        parser.error(f"--num_images must be a multiple of the model's {class_num} classes")
    spaces = load_feature_spaces(list(FEATURE_SPACES), class_num, size, args.device)

    sets = {
        "floor": (f"{args.num_images} real Fashion-MNIST training images, evenly spaced over the split",
                  lambda: dataset_images("fashion_mnist:train", size, channels, args.num_images)),
        "ceiling": (f"{args.num_images} samples of the class-conditional per-pixel histogram (alpha 1, seed "
                    f"{args.seed}), class-balanced, image i of class i // {args.num_images // class_num}",
                    lambda: histogram_samples(FashionMNIST("train", img_size=size, channels=channels),
                                              args.num_images, class_num, torch.Generator().manual_seed(args.seed))),
    }
    result = dict(reference=REFERENCE, num_reference=args.num_reference, num_images=args.num_images,
                  image_shape=[size, size, channels], model_path=args.model_path, threads=args.threads)
    for name, (description, make_images) in sets.items():
        set_start = time.perf_counter()
        images = make_images()
        metrics = score_in_spaces(images, spaces, REFERENCE, args.num_reference, args.cache_dir)
        result[name] = dict(description=description, **metrics, seconds=round(time.perf_counter() - set_start, 1))
        print(summary(name, result[name]), flush=True)
    result["seconds"] = round(time.perf_counter() - start, 1)
    text = json.dumps(result, indent=1)
    write_atomically(output, lambda stream: stream.write(text.encode() + b"\n"))
    print(f"wrote {output} ({result['seconds']:.0f} s in all)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
