"""Runnable from a source checkout: regenerate part of an image (fractal-edit). See `python python/edit.py --help`."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from fractal_ext.cli.edit import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
