"""Sample quality during training (`--online_eval`, as the official script's `--online_eval
--eval_freq`): every `eval_freq` epochs and at the end, class-balanced samples of the current
weights are drawn in shards (every rank its share, fractal_ext.evaluation.shards) and the main
process scores them (FID, IS, precision / recall); the results go to the JSON log and TensorBoard.
The feature networks are loaded when the run starts, so that a missing file fails before training."""
from pathlib import Path

import torch

from fractal_ext.evaluation import shards
from fractal_ext.training.distributed import DistInfo, barrier


class OnlineEvaluation:
    def __init__(self, args, model, info: DistInfo, output_dir: Path | None):
        from fractal_ext.evaluation.features import ClassifierFeatures, InceptionFeatures
        from fractal_ext.evaluation.reference import DATASET_PREFIXES, dataset_images, load_statistics_file

        if output_dir is None:
            raise ValueError("--online_eval writes its samples into --output_dir: give one")
        self.args, self.info, self.folder = args, info, output_dir / "online_eval"
        size, channels = model.config.img_size_list[0], model.config.channels
        names = args.eval_feature_spaces.split(",")
        unknown = [name for name in names if name not in ("inception", "classifier")]
        if unknown:
            raise ValueError(f"--eval_feature_spaces: unknown {unknown}; choose from inception, classifier")
        self.spaces = [InceptionFeatures(args.inception_path, info.device) if name == "inception"
                       else ClassifierFeatures(None, info.device) for name in names]
        if args.eval_reference.startswith(DATASET_PREFIXES):
            dataset_images(args.eval_reference, size, channels, limit=2)
        else:
            for space in self.spaces:
                load_statistics_file(args.eval_reference, space.dim)
        if args.num_eval_images % model.num_classes:
            raise ValueError(f"--num_eval_images {args.num_eval_images} must be a multiple of the model's "
                             f"{model.num_classes} classes (the samples are class-balanced)")

    def due(self, done: int, steps_per_epoch: int, end_step: int, total_steps: int) -> bool:
        every = max(1, round(self.args.eval_freq * steps_per_epoch))
        return done % every == 0 or done == total_steps == end_step

    @torch.no_grad()
    def run(self, model, step: int) -> dict | None:
        """Samples (all ranks) and scores (main process) the current weights; the metrics on the main
        process, None elsewhere. The model is put back in training mode."""
        from fractal_ext.evaluation.quality import score_in_spaces
        from fractal_ext.evaluation.reference import DEFAULT_CACHE_DIR
        from fractal_ext.models import default_sampling_settings

        args = self.args
        folder = self.folder / f"step-{step:07d}"
        run = shards.describe_run(model, args.num_eval_images, args.eval_batch_size, args.seed,
                                  default_sampling_settings(model),
                                  dict(greedy=False, raster_order=False, implementation="fast", precision="fp32"))
        model.eval()
        try:
            if self.info.is_main:
                shards.claim_folder(folder, run)
            barrier(self.info)
            shards.sample_chunks(model, run, folder, self.info.rank, self.info.world_size, progress=None)
            barrier(self.info)
            if not self.info.is_main:
                return None
            images, _ = shards.load_samples(folder, run)
            metrics = score_in_spaces(images, self.spaces, args.eval_reference, cache_dir=args.eval_cache_dir or DEFAULT_CACHE_DIR)
            return dict(metrics=metrics, grid=images[:64])
        finally:
            model.train()
            barrier(self.info)
