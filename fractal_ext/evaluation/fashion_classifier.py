"""A small Fashion-MNIST classifier (3 conv layers, 34k parameters, shipped in fractal_ext/assets):
it checks that class-conditional samples show the requested class, and its penultimate features
are the domain feature space of the Fashion-MNIST Fréchet distance (fractal_ext.evaluation.features).
examples/fashion_mnist/train_classifier.py trains it."""
import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save
from torch import nn

from fractal_ext.io.atomic import write_atomically

DEFAULT_CLASSIFIER = Path(__file__).resolve().parent.parent / "assets" / "fmnist_classifier.safetensors"
GREY_MEAN, GREY_STD = 0.286, 0.353  # Fashion-MNIST pixel statistics (0..1 scale)


class FashionClassifier(nn.Module):
    """uint8 images [B, 1 or 3, 32, 32] (grey repeated, as fractal_ext.io.datasets.FashionMNIST gives them, or
    generated samples; 28x28 images are zero-padded to 32x32 first) -> logits [B, 10]. Colour input is
    averaged to grey."""

    def __init__(self, num_classes: int = 10):
        super().__init__()

        def stage(cin, cout):
            return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(), nn.MaxPool2d(2)]

        self.features = nn.Sequential(*stage(1, 16), *stage(16, 32), *stage(32, 64))  # 32 -> 4
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(0.2), nn.Linear(64 * 4 * 4, num_classes))

    def forward(self, images_u8: torch.Tensor) -> torch.Tensor:
        return self.head(self.penultimate(images_u8))

    def penultimate(self, images_u8: torch.Tensor) -> torch.Tensor:
        """The 1024 features the linear head reads (the last stage's output, flattened)."""
        if images_u8.dim() == 4 and images_u8.shape[-2:] == (28, 28):  # the data's own size: padded as in training
            images_u8 = torch.nn.functional.pad(images_u8, (2, 2, 2, 2))
        if images_u8.dim() != 4 or images_u8.shape[1] not in (1, 3) or images_u8.shape[-2:] != (32, 32):
            raise ValueError(f"images must be [B, 1 or 3, 32 or 28, 32 or 28], got {tuple(images_u8.shape)}")
        grey = images_u8.float().mean(dim=1, keepdim=True) / 255
        return self.head[0](self.features((grey - GREY_MEAN) / GREY_STD))

    @torch.no_grad()
    def predict(self, images_u8: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
        was_training = self.training
        self.eval()
        try:
            return torch.cat([self(images_u8[i : i + batch_size]).argmax(-1) for i in range(0, len(images_u8), batch_size)])
        finally:
            self.train(was_training)


def save_classifier(model: FashionClassifier, path, info: dict | None = None):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    data = save(tensors, metadata={"fractal_ext.classifier": json.dumps(info or {})})
    write_atomically(path, lambda stream: stream.write(data))


def load_classifier(path=DEFAULT_CLASSIFIER) -> FashionClassifier:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"classifier weights not found: {path} (the package ships them in fractal_ext/assets; train new ones with examples/fashion_mnist/train_classifier.py)")
    model = FashionClassifier()
    model.load_state_dict(load_file(str(path)), strict=True)
    return model.eval()
