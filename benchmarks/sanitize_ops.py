"""Runs every fractal_ext operator once on CUDA at small awkward sizes (forward and backward), for
`compute-sanitizer --tool memcheck`: any out-of-bounds or misaligned access shows up there."""
import sys

import torch

from fractal_ext import ops


def main() -> int:
    if not torch.cuda.is_available():
        print("sanitize_ops: no CUDA device")
        return 1
    device = "cuda"
    g = torch.Generator(device=device).manual_seed(0)
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        images = torch.randn(3, 3, 12, 12, device=device, dtype=dtype, requires_grad=True)
        patches = ops.patchify(images, 4)
        ops.unpatchify(patches, 4).sum().backward()
        conditions = torch.randn(3, 9, 40, device=device, dtype=dtype, requires_grad=True)
        batch_index = torch.tensor([0, 2, 2, 1, 0], device=device)
        token_index = torch.tensor([0, 8, 4, 3, 4], device=device)
        ops.gather_neighbour_conditions(conditions, batch_index, token_index).sum().backward()
        for head_dim in (16, 32, 64, 80, 128):
            batch, heads, max_len = 3, 2, 19
            qkv = torch.randn(batch, 2, 3, heads, head_dim, device=device, dtype=dtype)
            q, k, v = qkv.unbind(2)
            k_cache = torch.randn(batch, heads, max_len, head_dim, device=device, dtype=dtype)
            v_cache = torch.randn_like(k_cache)
            seqlens = torch.tensor([0, 7, 17], device=device, dtype=torch.int32)
            ops.kv_cache_attention(q, k, v, k_cache, v_cache, seqlens, head_dim**-0.5)
        logits = torch.randn(2 * 37, 256, device=device, dtype=dtype)
        logits[3, :] = float("-inf")
        cfg = torch.full((37,), 3.0, device=device)
        for greedy in (False, True):
            ops.cfg_filter_sample(logits, cfg, 1.05, 1e-3, 1, greedy, g)
            ops.cfg_filter_sample(logits[:37], None, 1.0, 0.0, 2, greedy, g)
    torch.cuda.synchronize()
    print("sanitize_ops: every op ran")
    return 0


if __name__ == "__main__":
    sys.exit(main())
