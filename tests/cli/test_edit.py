"""The `fractal-edit` command line: completions and the before / mask / after grid written,
known pixels kept, and bad input refused with a message and exit status 2 before any sampling."""
import numpy as np
import pytest
from PIL import Image

from fractal_ext.cli import edit
from fractal_ext.io.checkpoints import save_model
from reference_models import build_reference_model

SETTINGS = ["--num_iter_list", "4,2", "--cfg", "2.0", "--temperature", "1.0", "--filter_threshold", "1e-3"]


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "tiny_mar.safetensors"
    save_model(build_reference_model("tiny_mar"), path)
    return path


@pytest.fixture
def image_file(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    path = tmp_path / "image.png"
    Image.fromarray(pixels).save(path)
    return path, pixels


def run(checkpoint, image, output_dir, *extra):
    return edit.main([str(image), "--checkpoint", str(checkpoint), "--output_dir", str(output_dir), *SETTINGS, *extra])


def read(path):
    return np.array(Image.open(path))


@pytest.mark.parametrize("region, known", [
    (["--box", "4,2,12,10"], lambda m: m.__setitem__((slice(2, 10), slice(4, 12)), False)),
    (["--outpaint", "3"], lambda m: (m.fill(False), m.__setitem__((slice(3, 13), slice(3, 13)), True))),
    (["--uncrop", "6"], lambda m: (m.fill(False), m.__setitem__((slice(5, 11), slice(5, 11)), True))),
])
def test_writes_completions_that_keep_the_known_pixels(tiny_checkpoint, image_file, tmp_path, region, known):
    image, pixels = image_file
    assert run(tiny_checkpoint, image, tmp_path / "out", *region, "--labels", "1,7", "--per_label", "2") == 0
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == ["completion_0000_class_1.png", "completion_0001_class_1.png", "completion_0002_class_7.png",
                     "completion_0003_class_7.png", "grid.png"]
    mask = np.ones((16, 16), dtype=bool)
    known(mask)
    for name in names[:-1]:
        completion = read(tmp_path / "out" / name)
        assert np.array_equal(completion[mask], pixels[mask])
        assert not np.array_equal(completion[~mask], pixels[~mask])
    grid = read(tmp_path / "out" / "grid.png")
    assert grid.shape == (3 * (4 * 18 + 2), 3 * (3 * 18 + 2), 3)  # 4 rows of before / mask / after, scale 3


def test_a_mask_image_and_a_crop_to_uncrop(tiny_checkpoint, image_file, tmp_path):
    image, pixels = image_file
    mask = np.zeros((16, 16), dtype=np.uint8)
    mask[8:, :] = 255  # white: generate the lower half
    Image.fromarray(mask).save(tmp_path / "mask.png")
    assert edit.main([str(image), "--checkpoint", str(tiny_checkpoint), "--output_dir", str(tmp_path / "a"),
                      "--mask", str(tmp_path / "mask.png"), "--unconditional", "--num_iter_list", "4,2"]) == 0
    assert np.array_equal(read(tmp_path / "a" / "completion_0000_class_none.png")[:8], pixels[:8])
    Image.fromarray(pixels[5:11, 5:11]).save(tmp_path / "crop.png")
    assert run(tiny_checkpoint, tmp_path / "crop.png", tmp_path / "b", "--uncrop", "6", "--labels", "2") == 0
    assert np.array_equal(read(tmp_path / "b" / "completion_0000_class_2.png")[5:11, 5:11], pixels[5:11, 5:11])


def bad_files(tmp_path):
    Image.fromarray(np.zeros((12, 12, 3), dtype=np.uint8)).save(tmp_path / "small.png")
    Image.fromarray(np.zeros((16, 16, 4), dtype=np.uint8)).save(tmp_path / "rgba.png")
    Image.fromarray(np.full((16, 16), 128, dtype=np.uint8)).save(tmp_path / "grey_mask.png")
    Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(tmp_path / "small_mask.png")
    Image.fromarray(np.zeros((16, 16), dtype=np.uint8)).save(tmp_path / "empty_mask.png")
    (tmp_path / "text.png").write_text("not an image")


@pytest.mark.parametrize("image, extra, message", [
    ("small.png", ["--box", "1,1,4,4", "--labels", "1"], "the image is 12x12, the model takes 16x16"),
    ("rgba.png", ["--box", "1,1,4,4", "--labels", "1"], "the model takes 3-channel images (RGB), got mode RGBA"),
    ("text.png", ["--box", "1,1,4,4", "--labels", "1"], "not an image file"),
    (None, ["--mask", "{tmp}/grey_mask.png", "--labels", "1"], "only black (0) and white (255) pixels, got also [128]"),
    (None, ["--mask", "{tmp}/small_mask.png", "--labels", "1"], "the mask is 8x8, the image 16x16"),
    (None, ["--mask", "{tmp}/empty_mask.png", "--labels", "1"], "the mask marks no pixel to generate"),
    (None, ["--box", "4,4,2,8", "--labels", "1"], "must satisfy 0 <= x0 < x1 <= 16"),
    (None, ["--box", "1,2,3", "--labels", "1"], "--box takes x0,y0,x1,y1"),
    (None, ["--outpaint", "8", "--labels", "1"], "border width must be an integer in [1, 7]"),
    (None, ["--uncrop", "16", "--labels", "1"], "the crop must be an integer in [1, 15]"),
    (None, ["--box", "1,1,4,4", "--labels", "10"], "labels must be in [0, 10)"),
    (None, ["--box", "1,1,4,4"], "one of the arguments --labels --unconditional is required"),
    (None, ["--labels", "1"], "one of the arguments --mask --box --outpaint --uncrop is required"),
    (None, ["--box", "1,1,4,4", "--unconditional", "--cfg", "3"], "cfg must be 1.0"),
])
def test_bad_input_is_refused_before_sampling(tiny_checkpoint, image_file, tmp_path, capsys, monkeypatch,
                                              image, extra, message):
    bad_files(tmp_path)
    monkeypatch.setattr(edit, "complete", lambda *a, **k: pytest.fail("sampled before checking its input"))
    image = tmp_path / image if image else image_file[0]
    argv = [str(image), "--checkpoint", str(tiny_checkpoint), "--output_dir", str(tmp_path / "out"),
            *[x.format(tmp=tmp_path) for x in extra]]
    with pytest.raises(SystemExit) as exit_info:
        edit.main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
