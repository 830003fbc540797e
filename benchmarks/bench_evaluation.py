"""Sampling for the generation evaluation against plain `generate`: same model, batch size and
settings, one run. The evaluation samples in chunks (one batch each, its own generator) and writes
one shard per chunk; the ratio says what that costs (it should be about 1).

    python -m pytest benchmarks/bench_evaluation.py -s      # the shipped model, batch 10, 20 images

Prints both rates (images/s) and the ratio (evaluation / generate).
"""
import sys
import tempfile
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from fractal_ext.evaluation import shards  # noqa: E402
from fractal_ext.io.checkpoints import load_model  # noqa: E402
from fractal_ext.models import default_sampling_settings  # noqa: E402
from fractal_ext.models.registry import SHIPPED_MODEL  # noqa: E402
from fractal_ext.sampler import generate  # noqa: E402
from sampling_cases import timed  # noqa: E402

SAMPLING = dict(greedy=False, raster_order=False, implementation="fast", precision="fp32")


def measure(model, num_images: int, batch: int, repeats: int = 2) -> dict:
    settings = default_sampling_settings(model)
    run = shards.describe_run(model, num_images, batch, 0, settings, SAMPLING)
    labels = torch.cat([run.labels(chunk) for chunk in range(run.num_chunks)])
    generate_s, evaluation_s = [], []
    for _ in range(repeats):  # interleaved; the evaluation first, so that one-time costs count against it
        with tempfile.TemporaryDirectory() as folder:
            shards.claim_folder(folder, run)
            evaluation_s.append(timed(lambda: shards.sample_chunks(model, run, folder, progress=None)))
        generate_s.append(timed(lambda: generate(model, labels, batch_size=batch,
                                                 generator=torch.Generator().manual_seed(0), **settings, **SAMPLING)))
    generate_rate, evaluation_rate = num_images / min(generate_s), num_images / min(evaluation_s)
    return dict(batch=batch, num_images=num_images, generate_images_per_s=generate_rate,
                evaluation_images_per_s=evaluation_rate, ratio=evaluation_rate / generate_rate)


@pytest.mark.skipif(not SHIPPED_MODEL.is_file(), reason="shipped model not present")
def test_evaluation_sampling_against_generate(benchmark):
    result = measure(load_model(SHIPPED_MODEL), num_images=20, batch=10)
    benchmark.extra_info.update(result)
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)  # the timing is the measurement above
    print(f"\nshipped model, batch {result['batch']}, {result['num_images']} images, CPU fp32, "
          f"{torch.get_num_threads()} threads: generate {result['generate_images_per_s']:.2f} images/s, evaluation "
          f"{result['evaluation_images_per_s']:.2f} images/s, ratio {result['ratio']:.3f}")
