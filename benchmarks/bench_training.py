"""Training speed in images/s: the eager step (the official computation: patchify and the MAR
neighbour gathering as PyTorch ops) against the step `fractal-train` runs by default (`--ops fused`:
those through fractal_ext's fused operators), same model and batch, one run.

    pytest benchmarks/bench_training.py -q -s -p no:randomly
    python benchmarks/bench_training.py --model fractalmar_fmnist28_grey --batch_size 32 --steps 10

(A compiled step, torch.compile of the whole model, was measured too and gave no gain on the CPU:
docs/training.md.)
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import pytest  # noqa: E402
import torch  # noqa: E402

from fractal_ext import ops  # noqa: E402
from fractal_ext.models import build_model  # noqa: E402
from fractal_ext.training.loop import train_step  # noqa: E402
from fractal_ext.training.optim import build_optimizer  # noqa: E402

SMALL_BENCH = dict(img_size_list=(16, 4, 1), embed_dim_list=(64, 32, 16), num_blocks_list=(2, 1, 1),
                   num_heads_list=(4, 2, 2), generator_type_list=("mar", "mar"), num_conds=5, class_num=10,
                   attn_dropout=0.0, proj_dropout=0.0)


def build(model_name, use_fused_ops: bool, device):
    torch.manual_seed(0)
    model = build_model(model_name) if model_name else _small()
    return model.set_use_fused_ops(use_fused_ops).to(device).train()


def _small():
    from fractal_ext.models import FractalGen

    return FractalGen(**SMALL_BENCH)


def iterations_per_second(model, batch, steps: int, warmup: int = 2, precision="fp32") -> float:
    images, labels = batch
    optimizer = build_optimizer(model, 1e-4, 0.05)
    scaler = torch.amp.GradScaler(images.device.type, enabled=precision == "fp16")
    generator = torch.Generator(images.device).manual_seed(0)
    for _ in range(warmup):
        train_step(model, optimizer, scaler, images, labels, generator, precision, 3.0)
    if images.device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        train_step(model, optimizer, scaler, images, labels, generator, precision, 3.0)
    if images.device.type == "cuda":
        torch.cuda.synchronize()
    return steps / (time.perf_counter() - start)


def compare(model_name=None, batch_size=8, steps=5, device="cpu", precision="fp32") -> dict:
    probe = build(model_name, False, device)
    size, channels = probe.config.img_size_list[0], probe.config.channels
    generator = torch.Generator().manual_seed(0)
    pixels = torch.randint(0, 256, (batch_size, channels, size, size), generator=generator, dtype=torch.uint8)
    batch = (probe.normalisation.normalise(pixels).to(device),
             torch.randint(0, probe.config.class_num, (batch_size,)).to(device))
    eager = iterations_per_second(probe, batch, steps, precision=precision) * batch_size
    fused = iterations_per_second(build(model_name, True, device), batch, steps, precision=precision) * batch_size
    name = model_name or "small 16x16 MAR"
    print(f"[bench_training] {name}, batch {batch_size}, {device}, {precision}, {torch.get_num_threads()} threads: "
          f"eager {eager:.1f} images/s, fused {fused:.1f} images/s, ratio fused/eager {fused / eager:.2f}x "
          f"(extension built: {ops.EXTENSION_AVAILABLE})", flush=True)
    return {"eager_images_per_s": eager, "fused_images_per_s": fused, "ratio": fused / eager}


NEEDS_CUDA = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


@pytest.mark.parametrize("model_name, batch_size", [(None, 8), ("fractalmar_fmnist28_grey", 32)])
@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=NEEDS_CUDA)])
def test_training_images_per_second(benchmark, device, model_name, batch_size):
    results = benchmark.pedantic(compare, kwargs=dict(model_name=model_name, batch_size=batch_size, device=device,
                                                      steps=3), rounds=1, iterations=1)
    assert results["eager_images_per_s"] > 0 and results["fused_images_per_s"] > 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="named config (default: a small 16x16 MAR)")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "fp16"))
    cli = parser.parse_args()
    compare(cli.model, cli.batch_size, cli.steps, cli.device, cli.precision)
