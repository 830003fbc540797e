"""Evaluation of trained models: the unconditional NLL in bits per dimension (`nll`)."""
from fractal_ext.evaluation.nll import bits_per_dim, dataset_bits_per_dim, default_num_passes

__all__ = ["bits_per_dim", "dataset_bits_per_dim", "default_num_passes"]
