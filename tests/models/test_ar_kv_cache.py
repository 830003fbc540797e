"""AR levels: KV-cached incremental decoding equals teacher-forced prediction."""
import pytest
import torch

from fractal_ext.models.ar import AR
from fractal_ext.models.layers import rope_2d_table
from reference_models import build_reference_model, reference_tensors


@pytest.mark.parametrize("name", ["tiny_ar"])
def test_incremental_decoding_matches_teacher_forcing_on_reference_weights(name):
    data = reference_tensors(name)
    generator = build_reference_model(name).generator
    patches, cond = data["l0.patches"], data["l0.cond_in"]
    with torch.no_grad():
        teacher_forced = generator.predict(patches, [cond])[0]
        caches = generator.setup_caches(cond.shape[0], torch.float32, cond.device)
        token = generator.embed(patches[:, :0], cond)
        incremental = []
        for step in range(generator.seq_len):
            incremental.append(generator.decode_step(token, step, caches))
            token = generator.embed(patches[:, step : step + 1], None, start=step + 1)
    torch.testing.assert_close(torch.stack(incremental, dim=1), teacher_forced, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("seq_len, head_dim", [(4, 8), (16, 16), (64, 32)])
def test_incremental_decoding_random_weights(seq_len, head_dim):
    torch.manual_seed(seq_len)
    generator = AR(seq_len=seq_len, patch_size=2, cond_embed_dim=24, embed_dim=2 * head_dim, num_blocks=2,
                   num_heads=2).eval()
    patches, cond = torch.randn(3, seq_len, 12), torch.randn(3, 24)
    with torch.no_grad():
        teacher_forced = generator.predict(patches, [cond])[0]
        caches = generator.setup_caches(3, torch.float32, "cpu")
        token = generator.embed(patches[:, :0], cond)
        for step in range(seq_len):
            out = generator.decode_step(token, step, caches)
            torch.testing.assert_close(out, teacher_forced[:, step], rtol=1e-5, atol=1e-5)
            token = generator.embed(patches[:, step : step + 1], None, start=step + 1)


def test_condition_token_has_zero_rotary_and_grid_angles():
    table = rope_2d_table(4, 16)  # head_dim 16: m = 8, 4 frequencies for rows and for columns
    assert table.shape == (17, 8, 2)
    assert torch.count_nonzero(table[0]) == 0
    token = 1 + 2 * 4 + 3  # grid position (row 2, column 3)
    freqs = 1.0 / (10000 ** (torch.arange(0, 8, 2).float() / 8))
    torch.testing.assert_close(table[token, :4, 0], torch.cos(2 * freqs))
    torch.testing.assert_close(table[token, 4:, 1], torch.sin(3 * freqs))
