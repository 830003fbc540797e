"""A training run for the kill tests (tests/training/test_kills.py), run as a script:

    python killable_training.py OUTPUT_DIR [KILL_AT_SAVE]

12 steps of a tiny MAR model on synthetic images, a checkpoint after every step, resumed from
OUTPUT_DIR when it holds one. Each checkpoint file is written in two halves with a pause between
them, so that a kill at a random moment often lands inside a save; with KILL_AT_SAVE = n the
process kills itself (SIGKILL: no cleanup code runs) halfway through its n-th checkpoint write."""
import io
import os
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import torch  # noqa: E402

from fractal_ext.training import checkpointing, train  # noqa: E402
from training_helpers import SyntheticImages, tiny_args, tiny_model  # noqa: E402

STEPS_ARGS = ("--epochs", "3", "--save_last_freq", "0.25")  # 4 steps per epoch, a checkpoint every step


def main():
    output_dir = Path(sys.argv[1])
    kill_at_save = int(sys.argv[2]) if len(sys.argv) > 2 else 0
    torch.set_num_threads(1)
    saves = 0
    real_save = torch.save

    def slow_save(obj, stream, *args, **kwargs):
        nonlocal saves
        saves += 1
        buffer = io.BytesIO()
        real_save(obj, buffer, *args, **kwargs)
        data = buffer.getvalue()
        stream.write(data[: len(data) // 2])
        stream.flush()
        if saves == kill_at_save:
            os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(0.05)
        stream.write(data[len(data) // 2 :])

    checkpointing.torch.save = slow_save
    resume = ("--resume", str(output_dir)) if (output_dir / checkpointing.CHECKPOINT_NAME).is_file() else ()
    train(tiny_args(output_dir, *STEPS_ARGS, *resume), model=tiny_model(), dataset=SyntheticImages(size=16))


if __name__ == "__main__":
    main()
