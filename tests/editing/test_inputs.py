"""`complete` and the mask helpers: what they accept, how they broadcast, and clear errors."""
import pytest
import torch

from fractal_ext.editing import border_mask, box_mask, centre_crop_mask, complete, lower_half_mask
from fractal_ext.models.known import KnownPixels
from reference_models import build_reference_model, normalised_images

SETTINGS = dict(num_iter_list=(4, 2), cfg=2.0, cfg_schedule="linear", temperature=1.0, filter_threshold=1e-3)


@pytest.fixture(scope="module")
def model():
    return build_reference_model("tiny_mar")


def test_masks():
    assert box_mask(8, 2, 1, 5, 3).logical_not().nonzero().tolist() == [[r, c] for r in (1, 2) for c in (2, 3, 4)]
    assert border_mask(8, 2).sum() == 16 and border_mask(8, 2)[2:6, 2:6].all()
    assert centre_crop_mask(8, 3).sum() == 9 and centre_crop_mask(8, 3)[2:5, 2:5].all()
    assert lower_half_mask(8)[:4].all() and not lower_half_mask(8)[4:].any()
    for make, args, message in ((box_mask, (8, 3, 0, 3, 4), "0 <= x0 < x1 <= 8"), (box_mask, (8, 0, 0, 9, 4), "x1 <= 8"),
                                (border_mask, (8, 4), r"\[1, 3\]"), (centre_crop_mask, (8, 8), r"\[1, 7\]"),
                                (box_mask, (0, 0, 0, 1, 1), "positive integer")):
        with pytest.raises(ValueError, match=message):
            make(*args)


def test_one_image_under_several_labels_and_uint8_in_uint8_out(model):
    image = (torch.arange(16 * 16 * 3) % 256).to(torch.uint8).reshape(16, 16, 3)
    mask = box_mask(16, 4, 4, 12, 12)
    out = complete(model, image, mask, labels=[1, 2, 3], generator=torch.Generator().manual_seed(0), **SETTINGS)
    assert out.shape == (3, 16, 16, 3) and out.dtype == torch.uint8
    assert torch.equal(out[:, mask], image[mask].expand(3, -1, -1))
    assert not torch.equal(out[0], out[1])  # other labels, other draws


def test_normalised_in_and_out_with_per_image_masks(model):
    images = normalised_images(2, 16)
    masks = torch.stack([box_mask(16, 0, 0, 8, 8), lower_half_mask(16)]).int()  # 0/1 integers are masks too
    out = complete(model, images, masks, labels=torch.tensor([4, 5]), output="normalised", **SETTINGS)
    keep = masks.bool()[:, None].expand_as(images)
    assert out.dtype == torch.float32 and torch.equal(out[keep], images[keep])


def test_unconditional(model):
    images = normalised_images(2, 16)
    out = complete(model, images, lower_half_mask(16), output="normalised", num_iter_list=(4, 2))
    assert torch.equal(out[:, :, :8], images[:, :, :8])
    with pytest.raises(ValueError, match="cfg must be 1.0"):
        complete(model, images, lower_half_mask(16), cfg=3.0)


@pytest.mark.parametrize("images, mask, labels, message", [
    (torch.zeros(16, 16, 4, dtype=torch.uint8), None, [1], r"uint8 images must be \[B, 16, 16, 3\]"),
    (torch.zeros(2, 3, 8, 8), None, [1], r"normalised images must be \[B, 3, 16, 16\]"),
    (torch.full((1, 3, 16, 16), float("nan")), None, [1], "NaN or infinite"),
    (torch.zeros(1, 3, 16, 16, dtype=torch.int32), None, [1], "uint8 pixels or normalised floats"),
    (None, torch.full((16, 16), 2), [1], "only 0 and 1"),
    (None, torch.ones(8, 8, dtype=torch.bool), [1], r"known_mask must be \[16, 16\]"),
    (None, None, [1, 2, 3], r"images \(2\), masks \(1\) and labels \(3\) must come in the same number, or one"),
    (None, None, [1, 10], r"labels must be in \[0, 10\)"),
    (None, None, [1.5, 2.0], "labels must be integers"),
])
def test_bad_input_is_a_clear_error(model, images, mask, labels, message):
    images = normalised_images(2, 16) if images is None else images
    mask = box_mask(16, 4, 4, 12, 12) if mask is None else mask
    with pytest.raises(ValueError, match=message):
        complete(model, images, mask, labels, **SETTINGS)


def test_model_sample_checks_its_known_pixels(model):
    cond_list = model.build_cond_list(torch.tensor([1, 2]), 2.0)
    args = (cond_list, (4, 2), 2.0, "linear", 1.0, 1e-3)
    good = KnownPixels(normalised_images(2, 16), torch.zeros(2, 16, 16, dtype=torch.bool))
    for implementation in ("fast", "eager"):
        for known, message in ((KnownPixels(good.pixels[:1], good.mask[:1]), r"known.pixels must be float32 \[2, 3, 16, 16\]"),
                               (KnownPixels(good.pixels, good.mask.float()), "known.mask must be bool"),
                               ("mask", "known must be KnownPixels")):
            with pytest.raises(ValueError, match=message):
                model.sample(*args, implementation=implementation, known=known)
