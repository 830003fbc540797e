"""Optimiser of the official recipe (docs/training.md): AdamW with two parameter groups and a per-iteration
learning rate (linear warm-up, then half-cycle cosine), with the batch-size scaling rule."""
import math

import torch

BASE_BATCH = 256


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Biases and 1-D parameters (norm weights, ...) get no weight decay; everything else does
    (embeddings and `[1, ...]` parameters such as fake_latent or mask_token are >= 2-D and decay)."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (no_decay if param.dim() <= 1 or name.endswith(".bias") else decay).append(param)
    return [{"params": no_decay, "weight_decay": 0.0}, {"params": decay, "weight_decay": weight_decay}]


def build_optimizer(model: torch.nn.Module, lr: float, weight_decay: float, betas=(0.9, 0.95)) -> torch.optim.AdamW:
    return torch.optim.AdamW(param_groups(model, weight_decay), lr=lr, betas=betas)


def scaled_lr(blr: float, effective_batch: int) -> float:
    """Absolute learning rate from the base one: lr = blr * effective_batch / 256."""
    return blr * effective_batch / BASE_BATCH


def lr_at(epoch: float, lr: float, min_lr: float, warmup_epochs: float, epochs: float) -> float:
    """Learning rate at a fractional epoch: linear warm-up from 0 over `warmup_epochs`, then a
    half-cycle cosine from `lr` down to `min_lr` at `epochs`."""
    if epoch < warmup_epochs:
        return lr * epoch / warmup_epochs
    if epochs <= warmup_epochs:
        return lr
    progress = min(1.0, (epoch - warmup_epochs) / (epochs - warmup_epochs))
    return min_lr + (lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


def set_lr(optimizer: torch.optim.Optimizer, lr: float):
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
