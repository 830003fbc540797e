"""What one sampling run decides once and every level reads: the settings of the run, and which
implementation each part of the fast path takes on this device and precision (`ComputePaths`)."""
from dataclasses import dataclass, field
from typing import Callable

import torch

from fractal_ext.models.known import LevelUnknowns, level_unknowns, unknown_token_counts
from fractal_ext.sampler.graphs import CudaStepGraph, StepGraphs, graph_safe_on_cuda
from fractal_ext.sampler.onednn import onednn_linear_available
from fractal_ext.settings import SamplingControls

# The CUDA attention kernel reads head rows as 16-byte vectors, so it takes head dims that are
# multiples of 8 (every official model's are); the sampler pads other head dims with zero columns.
CUDA_HEAD_DIM_MULTIPLE = 8


@dataclass(frozen=True)
class ComputePaths:
    """Which implementation each part of the fast path runs. `choose_paths` picks them from the
    device and precision; tests pass their own to run another device's path on the CPU.

    block_step_kernels: one-token block steps as one CPU operator each (llama_block_step /
        vit_block_step) where the row count suits them; otherwise the step is composed of torch's
        linear layers and the KV-cache attention operator.
    onednn_mar_pass: MAR levels' bidirectional passes on oneDNN GEMMs with reordered weights.
    bf16_weights: the CPU bf16 mode: the block-step operators read bf16 copies of the weight
        matrices and the MAR passes run bf16 GEMMs (oneDNN's, or the modules under autocast);
        activations, norms, attention softmax and sampling stay fp32, and no autocast is active.
    onednn_bf16_steps: in the CPU bf16 mode, block steps of more rows than the bf16 kernels take
        in one pass run on oneDNN's bf16 GEMMs instead (fractal_ext.sampler.decode.block_step_path).
    cache_head_dim_multiple: KV-cache rows are padded to a multiple of this (zero columns).
    step_graph: the class that records and replays fixed-shape steps (CUDA graphs), or None to run
        every step directly."""

    block_step_kernels: bool = False
    onednn_mar_pass: bool = False
    bf16_weights: bool = False
    onednn_bf16_steps: bool = False
    cache_head_dim_multiple: int = 1
    step_graph: type | None = None

    def cache_head_dim(self, head_dim: int) -> int:
        return -(-head_dim // self.cache_head_dim_multiple) * self.cache_head_dim_multiple


def use_graphs(setting, device: torch.device) -> bool:
    """`cuda_graphs` of a sampling call: None = on for CUDA where this build can capture the steps."""
    if setting is None:
        return device.type == "cuda" and graph_safe_on_cuda()
    if not isinstance(setting, bool):
        raise ValueError(f"cuda_graphs must be True, False or None (on for CUDA), got {setting!r}")
    if setting and device.type != "cuda":
        raise ValueError(f"cuda_graphs=True replays CUDA graphs and needs a model on a CUDA device, got {device}; "
                         "pass cuda_graphs=None or False")
    if setting and not graph_safe_on_cuda():
        raise ValueError("cuda_graphs=True needs fractal_ext's CUDA kernels, and this build runs kv_cache_attention "
                         "on CUDA through its PyTorch reference (see `fractal-info`); "
                         "rebuild with nvcc, or pass cuda_graphs=None or False")
    return setting


def choose_paths(device: torch.device, precision: str, cuda_graphs: bool | None) -> ComputePaths:
    """CPU fp32 and bf16: the CPU operators (bf16: on bf16 weight copies); elsewhere (CUDA, CPU
    fp16) the composed steps, under autocast at a reduced precision."""
    cpu_kernels = device.type == "cpu" and precision in ("fp32", "bf16")
    cpu_bf16 = device.type == "cpu" and precision == "bf16"
    return ComputePaths(
        block_step_kernels=cpu_kernels,
        onednn_mar_pass=cpu_kernels and onednn_linear_available(),
        bf16_weights=cpu_bf16,
        onednn_bf16_steps=cpu_bf16 and onednn_linear_available(),
        cache_head_dim_multiple=CUDA_HEAD_DIM_MULTIPLE if device.type == "cuda" else 1,
        step_graph=CudaStepGraph if use_graphs(cuda_graphs, device) else None,
    )


@dataclass(frozen=True)
class EditingPlan:
    """What an editing run's levels know on the host, from the user's mask (read once, before the
    first step): per generator level the LevelUnknowns of the rows it may be given, and at level 0
    each image's number of unknown tokens."""

    levels: tuple[LevelUnknowns, ...]
    top_level_counts: tuple[int, ...]

    @staticmethod
    def from_mask(mask: torch.Tensor, img_size_list) -> "EditingPlan":
        mask = mask.cpu()
        sizes = tuple(img_size_list)
        return EditingPlan(tuple(level_unknowns(mask, a, b) for a, b in zip(sizes, sizes[1:])),
                           tuple(unknown_token_counts(mask, sizes[1]).tolist()))


@dataclass(frozen=True)
class SamplingRun:
    num_iter_list: tuple
    temperature: float
    filter_threshold: float
    controls: SamplingControls
    guided: bool  # rows come in (conditional, unconditional) halves at every level
    paths: ComputePaths = field(default_factory=ComputePaths)
    # Called after each level-0 step with a function that returns the canvas then: (images
    # [n, C, H, W] normalised, generated [n, H, W] bool: known or generated so far). Computed only
    # when asked for: a progress bar never pays for it.
    on_top_level_step: Callable[[Callable[[], tuple]], None] | None = None
    graphs: StepGraphs = field(default_factory=StepGraphs)  # the run's replayed steps, by key
    prepared: dict = field(default_factory=dict)  # derived once per run (reordered weights), by key
    editing: EditingPlan | None = None  # an editing run's host-side knowledge of the mask
