"""Evidence that the shipped Fashion-MNIST model is real: test-split NLL next to a per-pixel
histogram baseline (same bits/dim definition), and agreement of a classifier with the requested
class on generated samples next to its accuracy on real test images.

    python examples/fashion_mnist/evidence.py --per_class 100 --threads 2
    python examples/fashion_mnist/evidence.py --model_path fractal_ext/assets/fractalmar_fmnist32.safetensors

Bits per dimension are over the model's C*S*S dimensions (for the RGB example model, the padded
3-channel 32x32 images: the eval loss is the mean cross-entropy over the channels,
docs/semantics.md). So that models of different sizes and channels compare, the script also gives
bits per real pixel: the bits of a whole image over its 28x28 real pixels (padding and repeated
channels count against the model that has them). Because the channels of RGB copies are equal, the
fair per-pixel baseline models the grey value once per pixel (`tied`); the channel-independent
histogram is printed too.
"""
import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import torch  # noqa: E402

from examples.fashion_mnist.baselines import PixelHistogram  # noqa: E402
from fractal_ext.io.checkpoints import load_model  # noqa: E402
from fractal_ext.evaluation.fashion_classifier import DEFAULT_CLASSIFIER, load_classifier  # noqa: E402
from fractal_ext.cli.common import integer, integer_list, seed, writable_output  # noqa: E402
from fractal_ext.models.registry import SHIPPED_MODEL, default_sampling_settings  # noqa: E402
from fractal_ext.io.datasets import FASHION_MNIST_CLASSES, FashionMNIST, iterate_batches  # noqa: E402
from fractal_ext.evaluation import dataset_bits_per_dim  # noqa: E402
from fractal_ext.io.images import save_grid_png  # noqa: E402
from fractal_ext.sampler import generate  # noqa: E402


REAL_PIXELS = 28 * 28  # a Fashion-MNIST image, before any padding


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model_path", default=str(SHIPPED_MODEL))
    parser.add_argument("--classifier_path", default=str(DEFAULT_CLASSIFIER))
    parser.add_argument("--num_test", type=integer(1), default=1000, help="test images for the model's bits/dim (first N)")
    parser.add_argument("--num_passes", type=integer(1), default=None, help="default 10 for MAR models (official)")
    parser.add_argument("--per_class", type=integer(1), default=30, help="generated samples per class")
    parser.add_argument("--cfg", type=float, default=None, help="default: the model's sampling settings")
    parser.add_argument("--temperature", type=float, default=None, help="default: the model's sampling settings")
    parser.add_argument("--num_iter_list", type=integer_list, default=None, help="default: the model's sampling settings")
    parser.add_argument("--seed", type=seed, default=0)
    parser.add_argument("--grid", default=None, help="also write the generated samples as a PNG grid")
    parser.add_argument("--threads", type=integer(1), default=1,
                        help="CPU threads (1 is fastest for the small batches of sampling on a shared CPU)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.grid:
        writable_output(args.grid)
    results = {}
    start = time.time()

    model = load_model(args.model_path)
    sampling = default_sampling_settings(model)
    for name in ("cfg", "temperature", "num_iter_list"):
        if getattr(args, name) is None:
            setattr(args, name, sampling[name])
    size, channels = model.config.img_size_list[0], model.config.channels
    train = FashionMNIST("train", img_size=size, channels=channels)
    test = FashionMNIST("test", img_size=size, channels=channels)
    batches = (model.normalisation.normalise(images) for images, _ in iterate_batches(test, 100, args.num_test))
    nll = dataset_bits_per_dim(model, batches, args.num_passes, args.seed, progress=True)
    results["model_bits_per_dim"] = nll["bits_per_dim"]
    to_real_pixels = channels * size * size / REAL_PIXELS
    results["model_bits_per_real_pixel"] = nll["bits_per_dim"] * to_real_pixels
    results["model_bits_per_dim_images"] = nll["images"]
    results["model_bits_per_dim_passes"] = nll["num_passes"]

    for channels_kind in ("tied", "independent"):
        histogram = PixelHistogram(size, size, channels_kind, image_channels=channels).fit(iterate_batches(train, 5000))
        results[f"histogram_{channels_kind}_bits_per_dim"] = histogram.bits_per_dim(iterate_batches(test, 1000, args.num_test))
        results[f"histogram_{channels_kind}_bits_per_dim_full_test"] = histogram.bits_per_dim(iterate_batches(test, 1000))
        results[f"histogram_{channels_kind}_bits_per_real_pixel"] = (
            results[f"histogram_{channels_kind}_bits_per_dim"] * to_real_pixels)

    classifier = load_classifier(args.classifier_path)
    images, labels = test.batch(torch.arange(len(test)))
    results["classifier_test_accuracy"] = float((classifier.predict(images) == labels).float().mean())

    requested = torch.arange(10).repeat_interleave(args.per_class)
    samples = generate(model, requested, batch_size=50, generator=torch.Generator().manual_seed(args.seed),
                       progress=True, num_iter_list=tuple(args.num_iter_list), cfg=args.cfg,
                       cfg_schedule=sampling["cfg_schedule"], temperature=args.temperature,
                       filter_threshold=sampling["filter_threshold"])  # uint8 [N, H, W, C]
    predicted = classifier.predict(samples.permute(0, 3, 1, 2))
    results["sample_agreement"] = float((predicted == requested).float().mean())
    results["sample_agreement_per_class"] = {
        FASHION_MNIST_CLASSES[c]: float((predicted[requested == c] == c).float().mean()) for c in range(10)}
    results["samples"] = len(requested)
    results["sampling"] = dict(cfg=args.cfg, temperature=args.temperature, num_iter_list=args.num_iter_list)
    if args.grid:
        save_grid_png(samples, rows=10, path=args.grid, scale=3)
    results["seconds"] = round(time.time() - start)

    print(f"model bits/dim (first {nll['images']} test images, {nll['num_passes']} passes): "
          f"{results['model_bits_per_dim']:.4f}; bits per real pixel {results['model_bits_per_real_pixel']:.4f}")
    print(f"per-pixel histogram (grey value per pixel), bits per real pixel on the same images: "
          f"{results['histogram_tied_bits_per_real_pixel']:.4f}")
    print(f"per-pixel histogram bits/dim, grey value per pixel (same images / full test split): "
          f"{results['histogram_tied_bits_per_dim']:.4f} / {results['histogram_tied_bits_per_dim_full_test']:.4f}")
    print(f"per-pixel histogram bits/dim, channels independent (same images / full test split): "
          f"{results['histogram_independent_bits_per_dim']:.4f} / "
          f"{results['histogram_independent_bits_per_dim_full_test']:.4f}")
    print(f"classifier accuracy on the 10000 real test images: {results['classifier_test_accuracy']:.4f}")
    print(f"classifier agreement with the requested class on {len(requested)} samples: "
          f"{results['sample_agreement']:.4f} (chance 0.1)")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
