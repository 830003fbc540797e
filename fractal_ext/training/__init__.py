"""Training of FractalGen models: optimiser and schedule, checkpoints, DDP set-up and the loop."""
from fractal_ext.training.cli import build_parser, parse_args
from fractal_ext.training.loop import NonFiniteLossError, train, train_step

__all__ = ["build_parser", "parse_args", "train", "train_step", "NonFiniteLossError"]
