"""Runnable from a source checkout: training (fractal-train). See `python python/train.py --help`."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from fractal_ext.cli.train import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
