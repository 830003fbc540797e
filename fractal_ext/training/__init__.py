"""Training of FractalGen models: optimiser and schedule (`optim`), checkpoints (`checkpointing`),
DDP set-up (`distributed`) and the loop (`loop`). The command line is fractal_ext.cli.train."""
from fractal_ext.training.loop import NonFiniteLossError, train, train_step

__all__ = ["train", "train_step", "NonFiniteLossError"]
