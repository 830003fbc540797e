"""Evidence that the CPU bf16 sampling mode keeps the distribution of the shipped Fashion-MNIST
model: fp32 samples with seed 1 (the baseline) and seed 2 (the spread), bf16 samples with seed 1,
and a negative control (bf16 at 0.8x the temperature); per pair the pooled pixel-histogram total
variation, the difference in classifier agreement and the classifier-feature Fréchet distance
(fractal_ext.evaluation.parity), with the time of each set.

    python examples/fashion_mnist/bf16_evidence.py --num_images 1000 --output bf16_evidence.json

Prints the result as one JSON line; --output also writes it (atomically).
"""
import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import torch  # noqa: E402

from fractal_ext.cli.common import integer, writable_output  # noqa: E402
from fractal_ext.evaluation.fashion_classifier import DEFAULT_CLASSIFIER, load_classifier  # noqa: E402
from fractal_ext.evaluation.parity import precision_parity  # noqa: E402
from fractal_ext.io.atomic import write_atomically  # noqa: E402
from fractal_ext.io.checkpoints import load_model  # noqa: E402
from fractal_ext.models.registry import NAMED_SAMPLING, SHIPPED_MODEL, SHIPPED_MODEL_NAME  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num_images", type=integer(10), default=1000, help="per set (a multiple of 10)")
    parser.add_argument("--batch_size", type=integer(1), default=50)
    parser.add_argument("--threads", type=integer(1), default=2)
    parser.add_argument("--classifier_path", default=str(DEFAULT_CLASSIFIER))
    parser.add_argument("--output", type=writable_output, default=None)
    args = parser.parse_args(argv)
    if args.num_images % 10:
        parser.error(f"--num_images must be a multiple of the 10 classes, got {args.num_images}")
    torch.set_num_threads(args.threads)
    settings = dict(NAMED_SAMPLING[SHIPPED_MODEL_NAME])
    start = time.perf_counter()
    result = precision_parity(load_model(SHIPPED_MODEL), load_classifier(args.classifier_path), args.num_images,
                              settings, {
                                  "bf16": {"precision": "bf16"},
                                  "bf16 at 0.8 x the temperature": {"precision": "bf16",
                                                                    "temperature": 0.8 * settings["temperature"]},
                              }, batch_size=args.batch_size)
    result.update(settings=settings, threads=args.threads, batch_size=args.batch_size,
                  seconds=time.perf_counter() - start)
    line = json.dumps(result)
    print(line)
    if args.output:
        write_atomically(args.output, lambda stream: stream.write((line + "\n").encode()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
