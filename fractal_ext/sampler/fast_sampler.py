"""The fast sampling path: the same recursion as `FractalGen.sample`, on the fused operators."""
import torch

from fractal_ext.models.ar import AR
from fractal_ext.models.fractalgen import FractalGen
from fractal_ext.models.known import KnownPixels, validate_known_pixels
from fractal_ext.sampler.ar import FastAR
from fractal_ext.sampler.graphs import StepGraphs
from fractal_ext.sampler.mar import FastMAR
from fractal_ext.sampler.pixel_head import FastPixelHead
from fractal_ext.sampler.plan import ComputePaths, EditingPlan, SamplingRun, choose_paths
from fractal_ext.sampler.workspace import Workspace
from fractal_ext.settings import AUTOCAST_DTYPES, SamplingControls, validate_sampling_args


class PixelHeadLevel:
    """The last level: conditions [K, R, C] -> pixels [n, 3] (the head uses the middle condition)."""

    def __init__(self, head, workspace):
        self.head = FastPixelHead(head, workspace)

    def sample(self, conds, cfg, cfg_schedule, run, known=None):
        return self.head.sample(conds[0], cfg, run, known)


class FastSampler:
    """Fast `sample` for one model. Holds no weights of its own (it runs the model's modules) and
    keeps its buffers (KV caches) between runs."""

    def __init__(self, model: FractalGen):
        self.model = model
        self.workspace = Workspace()
        self.top_level = self._build_levels(model, 0)

    def _build_levels(self, fractal, level):
        if isinstance(fractal, FractalGen):
            next_level = self._build_levels(fractal.next_fractal, level + 1)
            kind = FastAR if isinstance(fractal.generator, AR) else FastMAR
            return kind(fractal.generator, next_level, level, self.workspace)
        return PixelHeadLevel(fractal, self.workspace)

    @torch.no_grad()
    def sample(self, cond_list, num_iter_list, cfg, cfg_schedule, temperature, filter_threshold,
               controls: SamplingControls | None = None, on_top_level_step=None, precision: str = "fp32",
               cuda_graphs: bool | None = None, paths: ComputePaths | None = None,
               known: KnownPixels | None = None, on_step=None) -> torch.Tensor:
        """`precision`: "fp32" computes what the eager path computes; "bf16" / "fp16" run the
        matmuls under autocast (as the official code does on GPU), keeping the fp32 islands of the
        modules (RMSNorm, MAR attention logits, output logits, sampling), except "bf16" on the CPU:
        the block-step operators read bf16 copies of the weight matrices (made once per model,
        kept with the sampler's buffers), steps of more than 8 rows in blocks 512 or more wide
        and the MAR passes run oneDNN bf16 GEMMs, the rest fp32 (see ComputePaths.bf16_weights
        and onednn_bf16_steps). `cuda_graphs`: replay
        the AR levels' token steps, the MAR levels' passes and the pixel heads' channel steps as
        CUDA graphs (None: on for CUDA when this build has the CUDA kernels). `paths`: the
        implementations to take (default: chosen from the device, precision and cuda_graphs;
        tests pass others to run a GPU's path on the CPU). `known`: an editing run (see
        FractalGen.sample); the mask is read on the host once, here, before any step. `on_step`:
        called after every level-0 step with the canvas (see FractalGen.sample); without it (and
        without `on_top_level_step`, the progress hook) no step computes or reads one."""
        validate_sampling_args(self.model, cond_list, num_iter_list, cfg, cfg_schedule, temperature, filter_threshold)
        if precision not in AUTOCAST_DTYPES:
            raise ValueError(f"precision must be one of {sorted(AUTOCAST_DTYPES)}, got {precision!r}")
        editing = None
        if known is not None:
            validate_known_pixels(self.model, known, cond_list, cfg)
            editing = EditingPlan.from_mask(known.mask, self.model.config.img_size_list)
            if not any(editing.top_level_counts):
                return known.pixels.clone()  # every pixel known: nothing to generate
        if on_step is not None:
            progress = on_top_level_step

            def on_top_level_step(canvas):
                on_step(*canvas())
                if progress:
                    progress(canvas)

        conds = torch.stack(list(cond_list[: self.model.config.num_conds]))
        paths = paths or choose_paths(conds.device, precision, cuda_graphs)
        graphs = StepGraphs(paths.step_graph)
        run = SamplingRun(
            num_iter_list=tuple(int(n) for n in num_iter_list), temperature=float(temperature),
            filter_threshold=float(filter_threshold), controls=controls or SamplingControls(),
            guided=float(cfg) != 1.0, paths=paths, on_top_level_step=on_top_level_step, graphs=graphs,
            editing=editing,
        )
        # The CPU bf16 mode runs its bf16 GEMMs itself (ComputePaths.bf16_weights): no autocast.
        dtype = None if paths.bf16_weights else AUTOCAST_DTYPES[precision]
        # Autocast frees its cache of cast weights when the context exits: a recorded graph must
        # not point into it, so with graphs the casts happen inside each step.
        with torch.autocast(device_type=conds.device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None,
                            cache_enabled=not graphs.enabled):
            images = self.top_level.sample(conds, float(cfg), cfg_schedule, run, known)
        return images.float()
