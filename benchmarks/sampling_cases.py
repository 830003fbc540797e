"""Sampling benchmark cases: an architecture with random weights, a batch, and settings."""
import time
from dataclasses import dataclass

import torch

from fractal_ext.models import PUBLISHED_SAMPLING, FractalGen, build_model
from fractal_ext.settings import AUTOCAST_DTYPES

# Small enough for CI on 2 cores: FractalAR / FractalMAR-64 shapes scaled down, same recursion.
REDUCED = {
    "reduced_ar": dict(img_size_list=(16, 4, 1), embed_dim_list=(256, 128, 64), num_blocks_list=(4, 2, 2),
                       num_heads_list=(4, 2, 2), generator_type_list=("ar", "ar"), num_conds=1),
    "reduced_mar": dict(img_size_list=(16, 4, 1), embed_dim_list=(256, 128, 64), num_blocks_list=(4, 2, 2),
                        num_heads_list=(4, 2, 2), generator_type_list=("mar", "mar"), num_conds=5),
}
REDUCED_SETTINGS = {
    "reduced_ar": dict(num_iter_list=(16, 16), cfg=11.0, cfg_schedule="linear", temperature=1.03, filter_threshold=1e-4),
    "reduced_mar": dict(num_iter_list=(16, 16), cfg=6.5, cfg_schedule="linear", temperature=1.02, filter_threshold=1e-4),
}


@dataclass
class SamplingCase:
    name: str
    batch: int

    def build(self, device="cpu") -> tuple[FractalGen, dict]:
        torch.manual_seed(0)
        with torch.device(device):
            if self.name in REDUCED:
                model = FractalGen(**REDUCED[self.name], class_num=1000)
                settings = REDUCED_SETTINGS[self.name]
            else:
                model = build_model(self.name)
                settings = PUBLISHED_SAMPLING[self.name]
        return model.eval(), dict(settings)

    def run(self, model, settings, implementation, seed=0, precision="fp32", cuda_graphs=None):
        """One sampling run. The eager path at a reduced precision runs under autocast, the way the
        official evaluation samples on a GPU (with `torch.cuda.amp.autocast()`: fp16)."""
        device = next(model.parameters()).device
        labels = torch.arange(self.batch, device=device) % model.num_classes
        cond_list = model.build_cond_list(labels, settings["cfg"])
        generator = torch.Generator(device=device).manual_seed(seed)
        eager_autocast = implementation == "eager" and precision != "fp32"
        with torch.autocast(device.type, dtype=AUTOCAST_DTYPES[precision], enabled=eager_autocast):
            return model.sample(cond_list, settings["num_iter_list"], settings["cfg"], settings["cfg_schedule"],
                                settings["temperature"], settings["filter_threshold"], generator=generator,
                                implementation=implementation, precision=precision, cuda_graphs=cuda_graphs)


def timed(fn) -> float:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start
