"""The generation process: `on_step` gets the canvas after every level-0 step on both paths,
`visualize=True` is refused, and the commands' --animate writes it as a GIF."""
import pytest
import torch
from PIL import Image

from fractal_ext.cli import edit, sample
from fractal_ext.io.checkpoints import save_model
from reference_models import TINY_MODELS, build_reference_model, reference_entry


def canvases(name, implementation):
    model = build_reference_model(name)
    args = reference_entry(name)["sample_args"]
    cond_list = model.build_cond_list(torch.tensor([1, 2]), args["cfg"])
    seen = []
    out = model.sample(cond_list, args["num_iter_list"], args["cfg"], args["cfg_schedule"], args["temperature"],
                       args["filter_threshold"], implementation=implementation, greedy=True, raster_order=True,
                       on_step=lambda images, generated: seen.append((images.clone(), generated.clone())))
    return model, args, out, seen


@pytest.mark.parametrize("name", TINY_MODELS)
def test_every_level0_step_shows_the_canvas_on_both_paths(name):
    model, args, out, fast = canvases(name, "fast")
    _, _, _, eager = canvases(name, "eager")
    seq_len = (model.config.img_size_list[0] // model.config.img_size_list[1]) ** 2
    steps = seq_len if model.config.generator_type_list[0] == "ar" else min(seq_len, args["num_iter_list"][0])
    assert len(fast) == len(eager) == steps
    previous = torch.zeros_like(fast[0][1])
    for (images, generated), (eager_images, eager_generated) in zip(fast, eager):
        assert torch.equal(generated, eager_generated)
        assert (generated >= previous).all() and (generated != previous).any()  # grows at every step
        shown = generated[:, None].expand_as(images)
        assert torch.equal(images[shown], out[shown]) and torch.equal(eager_images[shown], out[shown])
        previous = generated
    assert previous.all() and torch.equal(fast[-1][0], out)


def test_visualize_true_is_refused_not_ignored():
    model = build_reference_model("tiny_mar")
    cond_list = model.build_cond_list(torch.tensor([1]), 2.0)
    for implementation in ("fast", "eager"):
        with pytest.raises(ValueError, match="visualize=True .* pass on_step="):
            model.sample(cond_list, (4, 2), 2.0, "linear", 1.0, 1e-3, 0, True, implementation=implementation)


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "tiny_mar.safetensors"
    save_model(build_reference_model("tiny_mar"), path)
    return path


def test_animate_writes_one_frame_per_step(tiny_checkpoint, tmp_path, capsys):
    settings = ["--num_iter_list", "4,2", "--cfg", "2.0", "--batch_size", "2"]
    assert sample.main(["--checkpoint", str(tiny_checkpoint), "--labels", "1,2,3", "--output", str(tmp_path / "s.png"),
                        "--animate", str(tmp_path / "process.gif"), *settings]) == 0
    gif = Image.open(tmp_path / "process.gif")
    assert gif.n_frames == 4  # the 4 level-0 steps; the chunks of 2 and 1 images side by side
    image = tmp_path / "image.png"
    Image.fromarray(torch.randint(0, 256, (16, 16, 3), dtype=torch.uint8).numpy()).save(image)
    assert edit.main([str(image), "--checkpoint", str(tiny_checkpoint), "--box", "0,0,8,8", "--labels", "1",
                      "--output_dir", str(tmp_path / "edit"), "--animate", *settings]) == 0
    assert Image.open(tmp_path / "edit" / "process.gif").n_frames == 4
    with pytest.raises(SystemExit) as exit_info:
        sample.main(["--checkpoint", str(tiny_checkpoint), "--animate", str(tmp_path / "process.png"), *settings])
    assert exit_info.value.code == 2 and "must end in .gif" in capsys.readouterr().err
