"""Trains a FractalGen model; see `python python/train.py --help`.

    python python/train.py --model fractalmar_fmnist32 --epochs 1 --output_dir outputs/fmnist
    torchrun --nproc_per_node=2 python/train.py ...      # DDP (NCCL on GPU, Gloo on CPU)
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from fractal_ext.cli import USER_ERRORS  # noqa: E402
from fractal_ext.training import NonFiniteLossError, parse_args, train  # noqa: E402


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        summary = train(args)
    except (NonFiniteLossError, *USER_ERRORS) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"done: {summary['steps']} steps, final loss {summary['final_loss']}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
