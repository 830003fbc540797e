"""Exact distribution test of editing: with every pixel known but one, the drawn values of that
pixel follow the model's conditional distribution, computed here independently from its
teacher-forced logits (the training-time `predict` of each level on the true image with only
that pixel's tokens masked); a sampler at the wrong temperature fails the same test."""
import pytest
import torch

from chi_square import chi_square_p_value
from fractal_ext.editing import complete
from fractal_ext.models import FractalGen, MAR
from fractal_ext.ops import reference
from fractal_ext.pixels import to_uint8
from reference_models import build_reference_model, normalised_images

DRAWS = 4000
PIXEL = (5, 6)  # row, column: inside a token that is not on the image's border
CFG, TEMPERATURE, FILTER = 2.0, 1.05, 1e-3
LABEL = 3


def teacher_forced_pixel_condition(model: FractalGen, image: torch.Tensor) -> torch.Tensor:
    """The pixel head's condition [2, C] (conditional, unconditional) of PIXEL of `image`
    [1, 3, H, W], every other pixel known, from each level's teacher-forced `predict`."""
    cond = model.build_cond_list(torch.tensor([LABEL]), CFG)
    level, y, x = model, *PIXEL
    while isinstance(level, FractalGen):
        gen = level.generator
        p = gen.patch_size
        side = image.shape[-1] // p
        token = (y // p) * side + (x // p)
        patches = reference.patchify(image, p)
        if isinstance(gen, MAR):
            mask = torch.zeros(1, gen.seq_len)
            mask[0, token] = 1.0  # only the token holding the unknown pixel is masked
            conds = gen.predict(torch.cat([patches, patches]), torch.cat([mask, mask]), cond)
        else:  # AR: causal, the pixels after this token are not seen
            conds = gen.predict(torch.cat([patches, patches]), cond)
        cond = [c[:, token] for c in conds]
        image = patches[:, token].reshape(1, 3, p, p)
        y, x = y % p, x % p
        level = level.next_fractal
    return cond[0]


def channel_probabilities(model, image, temperature):
    """Exact P(R) [256] and P(G) [256] = sum_r P(r) P(G | r) of the unknown pixel."""
    head = model
    while isinstance(head, FractalGen):
        head = head.next_fractal
    cond = teacher_forced_pixel_condition(model, image)
    cfg = torch.tensor([CFG])
    red_logits = head.logits_from_tokens(cond, torch.zeros(2, 3, dtype=torch.long))[:, 0]
    p_red = reference.guided_probabilities(red_logits, cfg, temperature, FILTER)[0].double()
    # Channel G's logits for every value of R: 256 teacher-forced rows per half.
    tokens = torch.zeros(512, 3, dtype=torch.long)
    tokens[:, 0] = torch.arange(256).repeat(2)
    green_logits = head.logits_from_tokens(cond.repeat_interleave(256, dim=0), tokens)[:, 1]
    guided = reference.guided_probabilities(torch.cat([green_logits[:256], green_logits[256:]]),
                                            cfg.expand(256), temperature, FILTER).double()
    return p_red, p_red @ guided


@pytest.mark.parametrize("name", ["tiny_ar", "tiny_mar"])
@pytest.mark.parametrize("implementation", ["fast", "eager"])
def test_the_one_unknown_pixel_follows_the_models_conditional_distribution(name, implementation):
    torch.manual_seed(0)
    model = build_reference_model(name)
    image = normalised_images(1, 16, seed=3)
    mask = torch.ones(16, 16, dtype=torch.bool)
    mask[PIXEL] = False
    out = complete(model, image, mask, labels=[LABEL] * DRAWS, batch_size=DRAWS, output="normalised",
                   implementation=implementation, generator=torch.Generator().manual_seed(1), num_iter_list=(4, 4),
                   cfg=CFG, cfg_schedule="constant", temperature=TEMPERATURE, filter_threshold=FILTER)
    drawn = to_uint8(out)[:, :, PIXEL[0], PIXEL[1]].long()  # [DRAWS, 3]
    counts = [torch.bincount(drawn[:, c], minlength=256) for c in range(2)]
    with torch.no_grad():
        expected = channel_probabilities(model, image, TEMPERATURE)
        wrong = channel_probabilities(model, image, 2.0 * TEMPERATURE)  # the negative control
    for channel in range(2):
        assert chi_square_p_value(counts[channel], expected[channel]) > 1e-3
    assert min(chi_square_p_value(counts[channel], wrong[channel]) for channel in range(2)) < 1e-8
