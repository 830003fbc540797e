"""Class-balanced sampling at scale, in fixed chunks stored as shards: the generation half of the
FID / IS evaluation (docs/evaluation.md).

- Labels as the official evaluation draws them: `num_images / class_num` images of each class, in
  class order (image i has label i // (num_images / class_num)).
- The work is cut into chunks of `chunk_size` consecutive images; chunk c is sampled as one batch
  with a generator seeded from (seed, c) only. Whoever samples a chunk (which process, how many
  processes, before or after a restart) gives it the same inputs, so it comes out the same.
- Under torchrun, rank r samples the chunks c with c % world_size == r. Each chunk is written as
  one safetensors shard (uint8 images [n, H, W, C] and their labels), atomically; a restarted run
  skips the shards already on disk, losing at most the chunks in flight.
- `run.json` in the output folder records what the shards are of (model weights' hash, settings,
  seed, counts); a folder written for anything else is refused before any sampling.
"""
import json
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from fractal_ext.evaluation.seeds import derived_seed
from fractal_ext.io.atomic import write_atomically
from fractal_ext.io.checkpoints import content_hash
from fractal_ext.io.run_lock import TEMPORARY

RUN_FILE = "run.json"
SHARD_FOLDER = "shards"


class GenerationRunError(ValueError):
    """An output folder, a shard or a request that the evaluation cannot use as it is."""


@dataclass(frozen=True)
class GenerationRun:
    """What a folder of shards holds: compared field by field when a run resumes or is scored."""

    model_hash: str
    image_shape: tuple  # (H, W, C)
    class_num: int
    num_images: int
    chunk_size: int
    seed: int
    settings: dict = field(default_factory=dict)  # the resolved sampling settings
    sampling: dict = field(default_factory=dict)  # greedy, raster order, implementation, precision

    def __post_init__(self):
        if self.class_num < 1:
            raise GenerationRunError(f"the model has {self.class_num} classes")
        if self.num_images < 1 or self.num_images % self.class_num:
            raise GenerationRunError(f"--num_images {self.num_images} must be a positive multiple of the model's "
                                     f"{self.class_num} classes (the samples are class-balanced)")
        if self.chunk_size < 1:
            raise GenerationRunError(f"the chunk size must be >= 1, got {self.chunk_size}")
        object.__setattr__(self, "image_shape", tuple(self.image_shape))

    @property
    def num_chunks(self) -> int:
        return -(-self.num_images // self.chunk_size)

    def chunk_images(self, chunk: int) -> range:
        return range(chunk * self.chunk_size, min(self.num_images, (chunk + 1) * self.chunk_size))

    def labels(self, chunk: int) -> torch.Tensor:
        per_class = self.num_images // self.class_num
        return torch.tensor([index // per_class for index in self.chunk_images(chunk)], dtype=torch.long)

    def seed_of(self, chunk: int) -> int:
        """The generator seed of a chunk: from (seed, chunk) only."""
        return derived_seed(self.seed, chunk)

    def to_json(self) -> dict:
        return json.loads(json.dumps(asdict(self)))  # tuples as lists, as read back


def describe_run(model, num_images: int, chunk_size: int, seed: int, settings: dict, sampling: dict) -> GenerationRun:
    size = model.config.img_size_list[0]
    return GenerationRun(model_hash=content_hash(model.state_dict()), image_shape=(size, size, model.config.channels),
                         class_num=model.num_classes, num_images=num_images, chunk_size=chunk_size, seed=seed,
                         settings=dict(settings), sampling=dict(sampling))


def claim_folder(output_dir, run: GenerationRun) -> None:
    """Writes run.json into a new or empty folder, or checks that the folder's run.json describes the
    same run (then its shards are reused). Raises GenerationRunError naming what differs."""
    output_dir = Path(output_dir)
    if output_dir.exists() and not output_dir.is_dir():
        raise GenerationRunError(f"--output_dir {output_dir} is a file, not a folder")
    recorded = read_run(output_dir)
    if recorded is None:
        if output_dir.is_dir() and (output_dir / SHARD_FOLDER).is_dir() and any((output_dir / SHARD_FOLDER).iterdir()):
            raise GenerationRunError(f"{output_dir} holds shards but no {RUN_FILE}: not a folder this command wrote")
        text = json.dumps(run.to_json(), indent=1, sort_keys=True)
        write_atomically(output_dir / RUN_FILE, lambda stream: stream.write(text.encode()))
        return
    differences = [key for key, value in run.to_json().items() if recorded.get(key) != value]
    if differences:
        listed = "; ".join(f"{key}: folder {recorded.get(key)!r}, this run {run.to_json()[key]!r}" for key in differences)
        raise GenerationRunError(f"{output_dir} holds samples of a different run ({listed}); use another "
                                 "--output_dir, or the same model and options to continue that run")


def read_run(output_dir) -> dict | None:
    """The folder's run.json as a dict, None when there is none."""
    path = Path(output_dir) / RUN_FILE
    if not path.is_file():
        return None
    try:
        recorded = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise GenerationRunError(f"{path} is not a run description this command wrote: {error}") from None
    if not isinstance(recorded, dict) or set(recorded) != {f.name for f in fields(GenerationRun)}:
        raise GenerationRunError(f"{path} is not a run description this command wrote (other fields)")
    return recorded


def recorded_run(output_dir) -> GenerationRun | None:
    """The run a folder's run.json describes, None when there is none."""
    recorded = read_run(output_dir)
    try:
        return None if recorded is None else GenerationRun(**recorded)
    except TypeError as error:
        raise GenerationRunError(f"{Path(output_dir) / RUN_FILE} is not a run description this command wrote: "
                                 f"{error}") from None


def shard_path(output_dir, chunk: int) -> Path:
    return Path(output_dir) / SHARD_FOLDER / f"chunk-{chunk:06d}.safetensors"


def read_shard(output_dir, run: GenerationRun, chunk: int) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(images uint8 [n, H, W, C], labels [n]) of a chunk, or None when its shard is not there. A
    shard that does not hold what the run says raises GenerationRunError."""
    path = shard_path(output_dir, chunk)
    if not path.is_file():
        return None
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError) as error:
        raise GenerationRunError(f"{path} is not a readable shard ({error}); delete it to sample it again") from None
    images, labels = tensors.get("images"), tensors.get("labels")
    count = len(run.chunk_images(chunk))
    if (images is None or labels is None or images.dtype != torch.uint8
            or tuple(images.shape) != (count, *run.image_shape) or not torch.equal(labels, run.labels(chunk))):
        raise GenerationRunError(f"{path} does not hold the {count} images of chunk {chunk} of this run; "
                                 "delete it to sample it again")
    return images, labels


def remove_interrupted_writes(output_dir, chunks) -> list[str]:
    """Removes the temporary files that a killed run's shard writes left for these chunks; returns
    their names. Only the rank that owns a chunk writes it, so a rank never removes a write that
    another live rank has in flight."""
    removed = []
    for chunk in chunks:
        path = shard_path(output_dir, chunk)
        for entry in path.parent.glob(f".{path.name}.*.tmp"):
            if TEMPORARY.match(entry.name):
                entry.unlink(missing_ok=True)
                removed.append(entry.name)
    return removed


def sample_chunks(model, run: GenerationRun, output_dir, rank: int = 0, world_size: int = 1, progress=print,
                  **generate_options) -> list[int]:
    """Samples this rank's chunks that have no shard yet and writes their shards. Returns the chunks
    it sampled. `generate_options`: what `generate` takes that does not change the images (cuda_graphs,
    progress); the settings and the sampling choices are the run's."""
    from fractal_ext.sampler import generate

    device = next(model.parameters()).device
    mine = [chunk for chunk in range(rank, run.num_chunks, world_size)]
    removed = remove_interrupted_writes(output_dir, mine)
    if progress is not None and removed:
        progress(f"[rank {rank}] removed {len(removed)} temporary file(s) of interrupted shard writes")
    pending = [chunk for chunk in mine if not shard_path(output_dir, chunk).is_file()]
    if progress is not None and len(pending) < len(mine):
        progress(f"[rank {rank}] {len(mine) - len(pending)} of its {len(mine)} chunks are on disk already")
    start = time.perf_counter()
    for done, chunk in enumerate(pending, 1):
        labels = run.labels(chunk)
        generator = torch.Generator(device=device).manual_seed(run.seed_of(chunk))
        images = generate(model, labels, batch_size=run.chunk_size, generator=generator,
                          **run.settings, **run.sampling, **generate_options).cpu().contiguous()
        data = save({"images": images, "labels": labels}, metadata={"chunk": str(chunk)})
        write_atomically(shard_path(output_dir, chunk), lambda stream: stream.write(data))
        if progress is not None:
            elapsed = time.perf_counter() - start
            progress(f"[rank {rank}] chunk {chunk} ({done}/{len(pending)}): "
                     f"{sum(len(run.chunk_images(c)) for c in pending[:done]) / elapsed:.2f} images/s")
    return pending


def load_samples(output_dir, run: GenerationRun) -> tuple[torch.Tensor, torch.Tensor]:
    """Every image and label of a finished run, in image order. Raises GenerationRunError listing
    missing chunks."""
    shards = [read_shard(output_dir, run, chunk) for chunk in range(run.num_chunks)]
    missing = [chunk for chunk, shard in enumerate(shards) if shard is None]
    if missing:
        shown = ", ".join(map(str, missing[:10])) + (" ..." if len(missing) > 10 else "")
        raise GenerationRunError(f"{output_dir}: {len(missing)} of {run.num_chunks} chunks have no shard yet "
                                 f"({shown}); run the sampling (without --score_only) to finish them")
    return torch.cat([images for images, _ in shards]), torch.cat([labels for _, labels in shards])
