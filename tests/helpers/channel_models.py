"""Tiny models of 1, 2 and 4 channels (random weights, seeded), each generator kind, with their
own pixel normalisation."""
import torch

from fractal_ext.models import FractalGen

KINDS = {
    "ar": dict(generator_type_list=("ar", "ar"), num_conds=1),
    "mar": dict(generator_type_list=("mar", "mar"), num_conds=5),
    "mar_guiding": dict(img_size_list=(8, 4, 2, 1), embed_dim_list=(32, 24, 16, 16), num_blocks_list=(1, 1, 1, 1),
                        num_heads_list=(2, 2, 2, 2), generator_type_list=("mar", "mar", "mar"), num_conds=5,
                        guiding_pixel=True),
}
NORMALISATION = {1: ((0.3,), (0.4,)), 2: ((0.3, 0.5), (0.4, 0.3)), 4: ((0.5, 0.4, 0.3, 0.6), (0.2, 0.3, 0.25, 0.3))}


def tiny(kind, channels, seed=0):
    torch.manual_seed(seed)
    config = dict(img_size_list=(8, 2, 1), embed_dim_list=(32, 16, 16), num_blocks_list=(1, 1, 1),
                  num_heads_list=(2, 2, 2), class_num=3, attn_dropout=0.0, proj_dropout=0.0)
    config.update(KINDS[kind])
    mean, std = NORMALISATION[channels]
    return FractalGen(**config, channels=channels, pixel_mean=mean, pixel_std=std).eval()
