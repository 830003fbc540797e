"""The options that `fractal-sample` and `fractal-edit` share: which model, the sampling settings,
the random choices and where the work runs; and what they become for `generate` / `complete`."""
import argparse

import torch

from fractal_ext.cli.common import device, integer, integer_list, seed
from fractal_ext.io.checkpoints import load_model
from fractal_ext.models import NAMED_CONFIGS
from fractal_ext.models.registry import SHIPPED_MODEL

SETTINGS = ("num_iter_list", "cfg", "cfg_schedule", "temperature", "filter_threshold")


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", "--model_path", dest="checkpoint", default=str(SHIPPED_MODEL),
                        help="official checkpoint .pth or fractal_ext .safetensors (default: the shipped model)")
    parser.add_argument("--model", default=None, choices=sorted(NAMED_CONFIGS),
                        help="named architecture (needed for an official .pth without args.model)")
    parser.add_argument("--skip_checkpoint_checks", action="store_true",
                        help="load a checkpoint whose hash, CRCs or values fail the checks (knowingly)")


def add_sampling_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--num_iter_list", type=integer_list, default=None, help="default: the model's settings")
    parser.add_argument("--cfg", type=float, default=None, help="classifier-free guidance scale (>= 1)")
    parser.add_argument("--cfg_schedule", choices=["linear", "constant"], default=None)
    parser.add_argument("--temperature", type=float, default=None,
                        help="multiplies the logits, as in the official code: above 1 is sharper, below 1 noisier")
    parser.add_argument("--filter_threshold", type=float, default=None)
    parser.add_argument("--seed", type=seed, default=0)
    parser.add_argument("--batch_size", type=integer(1), default=50, help="images per sampling batch")
    parser.add_argument("--greedy", action="store_true", help="most likely token instead of a random draw")
    parser.add_argument("--raster_order", action="store_true", help="MAR levels in raster order")
    parser.add_argument("--implementation", choices=["fast", "eager"], default="fast")
    parser.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"], default="auto",
                        help="fast path. fp32: the exact computation (auto on CPU). bf16 on CPU: bf16 weight copies "
                             "and bf16 GEMMs, norms, softmax and sampling in fp32 (same distribution, not the same "
                             "numbers; docs/performance.md). bf16 / fp16 on CUDA: autocast (auto on CUDA: fp16, as "
                             "the official evaluation). fp16 on CPU: autocast")
    parser.add_argument("--cuda_graphs", choices=["auto", "on", "off"], default="auto",
                        help="replay fixed-shape steps as CUDA graphs (auto: on for CUDA)")
    parser.add_argument("--device", type=device, default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=integer(1), default=1,
                        help="CPU threads (default 1: 2.1x faster than 2 when the other core is busy, 14%% slower on idle cores)")


def add_grid_scale_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--scale", type=integer(1), default=None,
                        help="upscale the grid by this factor, nearest (default: 3 below 64 pixels, else 1)")


def grid_scale(args, image_size: int) -> int:
    return args.scale or (3 if image_size < 64 else 1)


def load_the_model(args):
    return load_model(args.checkpoint, model_name=args.model, device=args.device,
                      verify=not args.skip_checkpoint_checks)


def sampling_settings(args) -> dict:
    """The settings given on the command line (the model's defaults fill in the rest)."""
    return {k: getattr(args, k) for k in SETTINGS if getattr(args, k) is not None}


def generation_options(args) -> dict:
    """Keyword arguments of generate / complete: the settings, the random choices, the compute."""
    return dict(batch_size=args.batch_size, generator=torch.Generator(device=args.device).manual_seed(args.seed),
                greedy=args.greedy, raster_order=args.raster_order, implementation=args.implementation,
                precision=args.precision, cuda_graphs={"auto": None, "on": True, "off": False}[args.cuda_graphs],
                progress=True, **sampling_settings(args))
