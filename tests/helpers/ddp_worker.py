"""Run by tests/test_training.py under `torchrun --nproc_per_node=2` (Gloo on CPU): one DDP step
(gradients and weights after it) and a 3-step run of the loop, on global batches of 8."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import torch  # noqa: E402
from torch.nn.parallel import DistributedDataParallel  # noqa: E402

from fractal_ext.io.datasets import normalise  # noqa: E402
from fractal_ext.training.distributed import cleanup, init_distributed  # noqa: E402
from fractal_ext.training.loop import BatchOrder, _train, rank_slice, train_step  # noqa: E402
from fractal_ext.training.optim import build_optimizer  # noqa: E402
from training_helpers import TINY_AR, SyntheticImages, tiny_args, tiny_model, without_dropout  # noqa: E402


def main(out: Path):
    info = init_distributed("cpu")
    assert info.world_size == 2, info
    dataset = SyntheticImages(size=16)
    model = without_dropout(tiny_model(TINY_AR))
    ddp_model = DistributedDataParallel(model)
    optimizer = build_optimizer(model, 1e-3, 0.05)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    images, labels = dataset.batch(rank_slice(BatchOrder(len(dataset), 8, seed=3).indices(0), info))
    train_step(ddp_model, optimizer, scaler, normalise(images), labels,
               torch.Generator().manual_seed(3 + info.rank), "fp32", 0.0, info)
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    params = {n: p.detach().clone() for n, p in model.named_parameters()}
    args = tiny_args(out / "run", "--batch_size", "4", "--epochs", "1.5", "--label_drop_prob", "0")
    summary = _train(args, info, without_dropout(tiny_model(TINY_AR)), SyntheticImages(size=16))
    if info.is_main:
        torch.save({"grads": grads, "params": params, "losses": summary["losses"]}, out / "ddp_step.pt")
    cleanup(info)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
