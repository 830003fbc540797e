"""Process-group set-up for `torchrun` (DistributedDataParallel: NCCL on GPU, Gloo on CPU) and
the few collectives the training loop needs. A plain `python` launch is a world of one."""
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str | None = None) -> DistInfo:
    """Reads torchrun's RANK / WORLD_SIZE / LOCAL_RANK. device None: CUDA when available."""
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("--device cuda was requested but no CUDA GPU is available")
        torch.cuda.set_device(local_rank)
        torch_device = torch.device("cuda", local_rank)
    else:
        torch_device = torch.device(device)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if torch_device.type == "cuda" else "gloo")
    return DistInfo(rank, world_size, local_rank, torch_device)


def all_reduce_mean(value: torch.Tensor, info: DistInfo) -> torch.Tensor:
    if info.distributed:
        value = value.clone()
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
        value /= info.world_size
    return value


def all_gather_objects(obj, info: DistInfo) -> list:
    if not info.distributed:
        return [obj]
    gathered = [None] * info.world_size
    dist.all_gather_object(gathered, obj)
    return gathered


def barrier(info: DistInfo):
    if info.distributed:
        dist.barrier()


def cleanup(info: DistInfo):
    if info.distributed and dist.is_initialized():
        # Every rank reaches the end before any tears its connections down: Gloo aborted one rank
        # (SIGABRT) once when the other was still busy (rank 0 writing its results).
        dist.barrier()
        dist.destroy_process_group()
