"""Runnable from a source checkout: what this installation is (fractal-info). See `python python/info.py --help`."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from fractal_ext.cli.info import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
