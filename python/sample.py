"""Runnable from a source checkout: the main job: the shipped model's Fashion-MNIST grid (fractal-sample). See `python python/sample.py --help`."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from fractal_ext.cli.sample import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
