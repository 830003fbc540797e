"""Settings shared by every level of one sampling run."""
from dataclasses import dataclass, field
from typing import Callable

from fractal_ext.models.sampling_controls import SamplingControls
from fractal_ext.sampler.graphs import StepGraphs


@dataclass(frozen=True)
class SamplingRun:
    num_iter_list: tuple
    temperature: float
    filter_threshold: float
    controls: SamplingControls
    guided: bool  # rows come in (conditional, unconditional) halves at every level
    on_top_level_step: Callable[[], None] | None = None  # progress callback of level 0
    graphs: StepGraphs = field(default_factory=lambda: StepGraphs(enabled=False))  # replayed steps (CUDA graphs)
    prepared: dict = field(default_factory=dict)  # derived once per run (reordered weights), by key
