"""Tiny configs, synthetic data and argument sets for the training-loop tests."""
import torch

from fractal_ext.models import FractalGen
from fractal_ext.cli.train import parse_args

# All-AR and no label dropout: every random choice of a training step is fixed by the data
# (AR levels draw nothing; the pixel-target noise never moves an exact k/255 value), once the AR
# blocks' dropout is switched off (see `without_dropout`). Used where two set-ups must agree.
TINY_AR = dict(img_size_list=(8, 2, 1), embed_dim_list=(16, 16, 8), num_blocks_list=(1, 1, 1),
               num_heads_list=(2, 2, 2), generator_type_list=("ar", "ar"), class_num=3, label_drop_prob=0.0,
               attn_dropout=0.0, proj_dropout=0.0)
# MAR levels with label dropout and dropout: exercises every random path of the loop.
TINY_MAR = dict(img_size_list=(8, 2, 1), embed_dim_list=(16, 16, 8), num_blocks_list=(1, 1, 1),
                num_heads_list=(2, 2, 2), generator_type_list=("mar", "mar"), num_conds=5, class_num=3,
                label_drop_prob=0.1, attn_dropout=0.1, proj_dropout=0.1)


def tiny_model(config=TINY_MAR, seed=0) -> FractalGen:
    torch.manual_seed(seed)
    return FractalGen(**config)


def without_dropout(model):
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    return model


class SyntheticImages(torch.utils.data.Dataset):
    """`size` uint8 images [C, S, S] of `num_classes` classes: a class-dependent stripe pattern plus
    noise, so a model can learn something. Has the in-memory `batch` fast path."""

    def __init__(self, size=32, img_size=8, num_classes=3, seed=0, channels=3):
        generator = torch.Generator().manual_seed(seed)
        self.labels = torch.arange(size) % num_classes
        base = torch.zeros(num_classes, channels, img_size, img_size)
        for c in range(num_classes):
            base[c, :, :, c::num_classes] = 200.0
        noise = torch.randint(0, 40, (size, channels, img_size, img_size), generator=generator).float()
        self.images = (base[self.labels] + noise).clamp(0, 255).to(torch.uint8)
        self.classes = [f"class{c}" for c in range(num_classes)]

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, index):
        return self.images[index], int(self.labels[index])

    def batch(self, indices):
        indices = torch.as_tensor(indices, dtype=torch.long)
        return self.images[indices], self.labels[indices]


def tiny_args(output_dir, *extra, **overrides):
    argv = ["--img_size", "8", "--batch_size", "4", "--epochs", "1", "--lr", "1e-3", "--warmup_epochs", "0.25",
            "--output_dir", str(output_dir), "--no_progress", "--num_workers", "0", "--save_last_freq", "1",
            "--log_freq", "1", "--device", "cpu", "--model", "tiny", "--seed", "3", *extra]
    args = parse_args(argv)
    for key, value in overrides.items():
        setattr(args, key, value)
    return args
