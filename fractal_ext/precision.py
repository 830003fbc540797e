"""The `precision` settings of sampling and training: fp32, or matmuls under autocast."""
import torch

AUTOCAST_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
