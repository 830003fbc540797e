import inspect
"""Every official configuration builds with exactly the official state-dict keys and shapes."""
import pytest
import torch

from fractal_ext import models
from fractal_ext.models import OFFICIAL_ARCHITECTURES, FractalGen

CONSTRUCTORS = {
    "fractalar_in64": models.fractalar_in64,
    "fractalmar_in64": models.fractalmar_in64,
    "fractalmar_base_in256": models.fractalmar_base_in256,
    "fractalmar_large_in256": models.fractalmar_large_in256,
    "fractalmar_huge_in256": models.fractalmar_huge_in256,
}


def build_on_meta(name, **kwargs):
    with torch.device("meta"):
        return CONSTRUCTORS[name](**kwargs)


@pytest.mark.parametrize("name", sorted(CONSTRUCTORS))
def test_state_dict_keys_and_shapes_match_official(name, official_state_dicts):
    official = official_state_dicts[name]
    model = build_on_meta(name, **official["constructor_kwargs"])
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert list(ours) == list(official["state_dict"])  # same keys, same order
    assert ours == official["state_dict"]


@pytest.mark.parametrize("name", sorted(CONSTRUCTORS))
def test_parameter_count_matches_official(name, official_state_dicts):
    model = build_on_meta(name)
    assert sum(p.numel() for p in model.parameters()) == official_state_dicts[name]["num_params"]


def test_official_keywords_are_accepted():
    model = build_on_meta("fractalmar_in64", label_drop_prob=0.2, class_num=10, attn_dropout=0.0, proj_dropout=0.0,
                          guiding_pixel=False, num_conds=5, r_weight=5.0, grad_checkpointing=True)
    assert model.class_emb.weight.shape == (10, 1024)
    assert model.next_fractal.next_fractal.r_weight == 5.0
    assert model.generator.grad_checkpointing


# The official modules' methods and the leading parameters of each (code written against the
# official modules calls them positionally).
OFFICIAL_METHODS = {
    "FractalGen": {"sample": ["cond_list", "num_iter_list", "cfg", "cfg_schedule", "temperature", "filter_threshold",
                              "fractal_level", "visualize"], "forward": ["imgs", "cond_list"]},
    "AR": {"patchify": ["imgs"], "unpatchify": ["x"], "predict": ["x", "cond_list"], "forward": ["imgs", "cond_list"],
           "sample": ["cond_list", "num_iter", "cfg", "cfg_schedule", "temperature", "filter_threshold",
                      "next_level_sample_function", "visualize"]},
    "MAR": {"patchify": ["imgs"], "unpatchify": ["x"], "predict": ["x", "mask", "cond_list"],
            "forward": ["imgs", "cond_list"],
            "sample": ["cond_list", "num_iter", "cfg", "cfg_schedule", "temperature", "filter_threshold",
                       "next_level_sample_function", "visualize"]},
    "PixelLoss": {"predict": ["target", "cond_list"], "forward": ["target", "cond_list"],
                  "sample": ["cond_list", "temperature", "cfg", "filter_threshold"]},
}


@pytest.mark.parametrize("name", ["fractalar_in64", "fractalmar_base_in256"])
def test_official_module_methods_keep_their_signatures(name):
    model = build_on_meta(name)
    modules = [model, model.generator, model.next_fractal.generator, model.next_fractal.next_fractal]
    for module in modules:
        for method, leading in OFFICIAL_METHODS[type(module).__name__].items():
            parameters = list(inspect.signature(getattr(module, method)).parameters)
            assert parameters[: len(leading)] == leading, (type(module).__name__, method, parameters)


@pytest.mark.parametrize(
    "override, message",
    [
        (dict(embed_dim_list=(64, 32)), "embed_dim_list"),
        (dict(img_size_list=(16, 4, 2)), "end in 1"),
        (dict(img_size_list=(16, 6, 1)), "multiple"),
        (dict(generator_type_list=("ar", "gan")), "'ar' or 'mar'"),
        (dict(num_heads_list=(5, 2, 2)), "divisible"),
        (dict(generator_type_list=("ar", "mar"), num_conds=5), "follows an AR level"),
    ],
)
def test_bad_custom_configs_are_rejected(override, message):
    config = dict(img_size_list=(16, 4, 1), embed_dim_list=(64, 32, 16), num_blocks_list=(1, 1, 1),
                  num_heads_list=(4, 2, 2), generator_type_list=("ar", "ar"), class_num=10)
    config.update(override)
    with pytest.raises(ValueError, match=message):
        FractalGen(**config)


def test_unknown_model_name():
    with pytest.raises(ValueError, match="unknown model"):
        models.build_model("fractalgan_in64")
    assert set(OFFICIAL_ARCHITECTURES) == set(CONSTRUCTORS)
