"""Sample quality during training (`--online_eval`, as the official script's `--online_eval
--eval_freq`): every `eval_freq` epochs and at the end, class-balanced samples of the current
weights are drawn in shards (every rank its share, fractal_ext.evaluation.shards) and the main
process scores them (FID, IS, precision / recall); the results go to the JSON log and TensorBoard.

The feature networks and the reference are checked when the run starts, on every rank, so that a
missing file fails before training. An evaluation's folder (online_eval/step-N) holds its shards
and, once scored, its metrics.json: a run resumed from step N redoes the evaluation of step N if
that file is missing (the run was stopped during it)."""
import json
import shutil
from pathlib import Path

import torch

from fractal_ext.evaluation import shards
from fractal_ext.io.atomic import write_atomically
from fractal_ext.training.distributed import DistInfo, all_gather_objects, barrier

METRICS_FILE = "metrics.json"


class OnlineEvaluation:
    def __init__(self, args, model, info: DistInfo, output_dir: Path | None):
        from fractal_ext.evaluation.setup import check_reference, load_feature_spaces

        if output_dir is None:
            raise ValueError("--online_eval writes its samples into --output_dir: give one")
        if args.num_eval_images % model.num_classes or args.num_eval_images < 2:
            raise ValueError(f"--num_eval_images {args.num_eval_images} must be a multiple of the model's "
                             f"{model.num_classes} classes (the samples are class-balanced), and at least 2")
        self.args, self.info, self.folder = args, info, output_dir / "online_eval"
        size, channels = model.config.img_size_list[0], model.config.channels
        self.spaces = load_feature_spaces(args.eval_feature_spaces.split(","), model.num_classes, size, info.device,
                                          args.inception_path)
        check_reference(args.eval_reference, self.spaces, size, channels)

    def due(self, done: int, steps_per_epoch: int, total_steps: int) -> bool:
        every = max(1, round(self.args.eval_freq * steps_per_epoch))
        return done % every == 0 or done == total_steps

    def unfinished(self, step: int) -> bool:
        """Whether the evaluation of `step` was started and not scored (the run stopped during it)."""
        folder = self.folder / f"step-{step:07d}"
        return folder.is_dir() and not (folder / METRICS_FILE).is_file()

    @torch.no_grad()
    def run(self, model, step: int) -> dict | None:
        """Samples (all ranks) and scores (main process) the current weights; {"metrics", "grid"} on the
        main process, None elsewhere. The model is put back in training mode. A failure of the scoring
        is raised on every rank (none is left waiting in a collective)."""
        from fractal_ext.evaluation.quality import score_in_spaces
        from fractal_ext.evaluation.reference import DEFAULT_CACHE_DIR
        from fractal_ext.models import default_sampling_settings

        args, info = self.args, self.info
        folder = self.folder / f"step-{step:07d}"
        run = shards.describe_run(model, args.num_eval_images, args.eval_batch_size, args.seed,
                                  default_sampling_settings(model),
                                  dict(greedy=False, raster_order=False, implementation="fast", precision="fp32"))
        if info.is_main:
            try:
                shards.claim_folder(folder, run)
            except shards.GenerationRunError:  # samples of other weights or options (a resumed run): scratch
                shutil.rmtree(folder)
                shards.claim_folder(folder, run)
        barrier(info)
        model.eval()
        try:
            shards.sample_chunks(model, run, folder, info.rank, info.world_size, progress=None)
        finally:
            model.train()
        barrier(info)
        result, error = None, None
        if info.is_main:
            try:
                images, _ = shards.load_samples(folder, run)
                metrics = score_in_spaces(images, self.spaces, args.eval_reference,
                                          cache_dir=args.eval_cache_dir or DEFAULT_CACHE_DIR)
                text = json.dumps(metrics)
                write_atomically(folder / METRICS_FILE, lambda stream: stream.write(text.encode()))
                result = dict(metrics=metrics, grid=images[:64])
            except (ValueError, OSError) as failure:
                error = f"{type(failure).__name__}: {failure}"
        error = all_gather_objects(error, info)[0]
        if error is not None:
            raise RuntimeError(f"the online evaluation of step {step} failed: {error}")
        return result
