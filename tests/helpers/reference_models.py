"""Loads the tiny reference models of tests/data/reference (produced by the official code)."""
import json
from functools import lru_cache

import torch
from safetensors.torch import load_file

from capture_rehearsal import rehearsed_paths
from fractal_ext.models import FractalGen
from fractal_ext.pixels import normalise
from fractal_ext.settings import SamplingControls

from repo import REFERENCE_DIR, TINY_MODELS  # noqa: F401  (TINY_MODELS: for the tests)

# Models whose eval loss does not depend on the random tie-breaking of the guiding pixels.
TINY_MODELS_WITHOUT_TIES = ("tiny_ar", "tiny_mar")


@lru_cache(maxsize=None)
def reference_tensors(name: str) -> dict:
    return load_file(str(REFERENCE_DIR / f"{name}.safetensors"))


def reference_entry(name: str) -> dict:
    return json.loads((REFERENCE_DIR / "index.json").read_text())["tiny_models"][name]


def reference_state_dict(name: str) -> dict:
    return {k[len("weights."):]: v for k, v in reference_tensors(name).items() if k.startswith("weights.")}


def build_reference_model(name: str) -> FractalGen:
    """The tiny model with its reference weights, in eval mode (its config has dropout 0)."""
    model = FractalGen(**reference_entry(name)["config"], attn_dropout=0.0, proj_dropout=0.0)
    model.load_state_dict(reference_state_dict(name), strict=True)
    return model.eval()


def pixel_head_of(model):
    head = model
    while isinstance(head, FractalGen):
        head = head.next_fractal
    return head


def normalised_images(batch: int, size: int, seed: int = 0) -> torch.Tensor:
    """Random 8-bit images, normalised like the training data."""
    generator = torch.Generator().manual_seed(seed)
    return normalise(torch.randint(0, 256, (batch, 3, size, size), generator=generator).to(torch.uint8))


def sample_tiny(name, device, cuda_graphs, greedy, seed=0, precision="fp32", paths=None):
    """The fast sampler on tiny reference model `name` with its recorded sampling arguments.
    cuda_graphs=True replays the steps: CUDA graphs on CUDA, the capture rehearsal on the CPU
    (tests/helpers/capture_rehearsal.py); `paths` chooses the compute paths outright."""
    data = reference_tensors(name)
    args = reference_entry(name)["sample_args"]
    model = build_reference_model(name).to(device)
    cond_list = model.build_cond_list(data["in.labels"].to(device), args["cfg"])
    generator = torch.Generator(device=device).manual_seed(seed)
    if cuda_graphs and paths is None:
        paths = rehearsed_paths(device, precision)
    return model.fast_sampler().sample(cond_list, args["num_iter_list"], args["cfg"], args["cfg_schedule"],
                                       args["temperature"], args["filter_threshold"],
                                       SamplingControls(generator, greedy, raster_order=greedy), precision=precision,
                                       cuda_graphs=False, paths=paths)
