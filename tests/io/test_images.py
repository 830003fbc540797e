"""Image files of 1 to 4 channels: written in the matching mode, read for a model of C channels
with the conversions that lose nothing, refused otherwise."""
import numpy as np
import pytest
import torch
from PIL import Image

from fractal_ext.io.images import read_image, save_grid_png, save_png


@pytest.mark.parametrize("channels, mode", [(1, "L"), (2, "LA"), (3, "RGB"), (4, "RGBA")])
def test_written_in_the_mode_of_their_channels_and_read_back(tmp_path, channels, mode):
    pixels = torch.randint(0, 256, (6, 5, channels), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    save_png(pixels, tmp_path / "x.png")
    assert Image.open(tmp_path / "x.png").mode == mode
    assert torch.equal(read_image(tmp_path / "x.png", channels), pixels)
    save_grid_png(pixels.expand(4, -1, -1, -1), rows=2, path=tmp_path / "grid.png")
    assert Image.open(tmp_path / "grid.png").mode == mode


def test_lossless_conversions_only(tmp_path):
    grey = np.arange(30, dtype=np.uint8).reshape(5, 6)
    Image.fromarray(grey).save(tmp_path / "grey.png")
    assert torch.equal(read_image(tmp_path / "grey.png", 3), torch.from_numpy(grey)[..., None].expand(-1, -1, 3))
    assert (read_image(tmp_path / "grey.png", 4)[..., 3] == 255).all()
    Image.fromarray(np.stack([grey] * 3, axis=-1)).save(tmp_path / "grey_rgb.png")
    assert torch.equal(read_image(tmp_path / "grey_rgb.png", 1)[..., 0], torch.from_numpy(grey))
    colour = np.stack([grey, grey + 1, grey], axis=-1)
    Image.fromarray(colour).save(tmp_path / "colour.png")
    with pytest.raises(ValueError, match="the model takes grey images, got a colour"):
        read_image(tmp_path / "colour.png", 1)
    Image.fromarray(np.dstack([colour, grey])).save(tmp_path / "rgba.png")
    with pytest.raises(ValueError, match=r"takes 3-channel images \(RGB\), got mode RGBA"):
        read_image(tmp_path / "rgba.png", 3)
