"""Training iterations per second: eager modules vs the fused operators, same batch, one run.

    pytest benchmarks/bench_training.py -q -s -p no:randomly
    python benchmarks/bench_training.py --model fractalmar_fmnist32 --batch_size 32 --steps 10

`use_fused_ops=True` asks the model to route patchify / unpatchify and the MAR neighbour
gathering through `fractal_ext.ops` (compiled kernels when the extension is built, else their
references). It needs the models' switch `FractalGen.set_use_fused_ops(enabled)`; until the
models have it, the fused configuration is reported as unavailable.
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
from fractal_ext.io.datasets import normalise  # noqa: E402
from fractal_ext.training.loop import train_step  # noqa: E402
from fractal_ext.training.optim import build_optimizer  # noqa: E402

SMALL_BENCH = dict(img_size_list=(16, 4, 1), embed_dim_list=(64, 32, 16), num_blocks_list=(2, 1, 1),
                   num_heads_list=(4, 2, 2), generator_type_list=("mar", "mar"), num_conds=5, class_num=10,
                   attn_dropout=0.0, proj_dropout=0.0)


def build(model_name, use_fused_ops: bool, device):
    torch.manual_seed(0)
    model = build_model(model_name) if model_name else _small()
    if use_fused_ops:
        switch = getattr(model, "set_use_fused_ops", None)
        if switch is None:
            return None
        switch(True)
    return model.to(device).train()


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
    size = probe.config.img_size_list[0]
    generator = torch.Generator().manual_seed(0)
    pixels = torch.randint(0, 256, (batch_size, 3, size, size), generator=generator, dtype=torch.uint8)
    batch = (normalise(pixels).to(device), torch.randint(0, probe.config.class_num, (batch_size,)).to(device))
    results = {"eager": iterations_per_second(probe, batch, steps, precision=precision)}
    fused = build(model_name, True, device)
    results["fused"] = iterations_per_second(fused, batch, steps, precision=precision) if fused is not None else None
    name = model_name or "small 16x16 MAR"
    line = f"[bench_training] {name}, batch {batch_size}, {device}, {precision}: eager {results['eager']:.3f} it/s"
    if results["fused"] is None:
        line += ("; fused: unavailable (the models have no set_use_fused_ops switch yet"
                 f"; extension built: {ops.EXTENSION_AVAILABLE}, fractal_ext from {os.path.dirname(ops.__file__)})")
    else:
        line += f"; fused {results['fused']:.3f} it/s; ratio fused/eager {results['fused'] / results['eager']:.2f}x"
    print(line, flush=True)
    return results


NEEDS_CUDA = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=NEEDS_CUDA)])
def test_training_iterations_per_second(benchmark, device):
    results = benchmark.pedantic(compare, kwargs=dict(device=device, steps=3), rounds=1, iterations=1)
    assert results["eager"] > 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="named config (default: a small 16x16 MAR)")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "fp16"))
    cli = parser.parse_args()
    compare(cli.model, cli.batch_size, cli.steps, cli.device, cli.precision)
