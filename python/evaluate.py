"""Runnable from a source checkout: bits per dimension over a dataset split (fractal-eval). See `python python/evaluate.py --help`."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from fractal_ext.cli.evaluate import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
