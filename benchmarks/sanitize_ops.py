"""Runs every fractal_ext operator on CUDA at small awkward sizes (forward and backward), for
compute-sanitizer: any out-of-bounds or misaligned access shows up under `--tool memcheck`, a
shared-memory race or barrier misuse under `--tool racecheck` / `--tool synccheck`.

    python benchmarks/sanitize_ops.py [--device cuda|cpu] [--only kv_cache_attention]

The sizes reach every kernel path: vector and element-wise loads (aligned, offset by one element,
strided), tails that are not a multiple of the vector width, every head-dim instantiation, the
multi-warp attention merge, chunked sampling rows. `--device cpu` runs the same inputs through
the CPU kernels (a dry run on a machine without a GPU: every input passes the ops' checks).
"""
import argparse
import sys

import torch

from fractal_ext import ops

DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def patchify_and_gather(device):
    for dtype in DTYPES + (torch.float64,):
        for size, patch in ((12, 4), (6, 1)):
            images = torch.randn(3, 3, size, size, device=device, dtype=dtype, requires_grad=True)
            ops.unpatchify(ops.patchify(images, patch), patch).sum().backward()
        transposed = torch.randn(3, 3, 8, 8, device=device, dtype=dtype).transpose(2, 3)  # strided rows
        ops.unpatchify(ops.patchify(transposed, 2), 2)
        batch_index = torch.tensor([0, 2, 2, 1, 0], device=device)
        token_index = torch.tensor([0, 8, 4, 3, 4], device=device)
        conditions = torch.randn(3, 9, 40, device=device, dtype=dtype, requires_grad=True)
        ops.gather_neighbour_conditions(conditions, batch_index, token_index).sum().backward()
        offset = torch.randn(3 * 9 * 40 + 1, device=device, dtype=dtype)[1:].view(3, 9, 40)  # misaligned
        ops.gather_neighbour_conditions(offset, batch_index, token_index)
        channel_strided = torch.randn(3, 9, 80, device=device, dtype=dtype)[:, :, ::2]  # element copies
        ops.gather_neighbour_conditions(channel_strided, batch_index, token_index)
        strided_grad = torch.randn(5, 5, 80, device=device, dtype=dtype)[:, :, ::2]  # element-wise backward
        ops.gather_neighbour_conditions_backward(strided_grad, batch_index, token_index, 3, 9)


def kv_cache_attention(device):
    cases = [(3, 2, 19, d, 2) for d in (8, 16, 32, 64, 80, 128, 136, 256)]  # every head-dim instantiation
    cases += [(1, 2, 300, 64, 1), (2, 1, 300, 32, 3)]  # few (b, h) pairs, long caches: multi-warp merge
    for dtype in DTYPES:
        for batch, heads, max_len, head_dim, new_len in cases:
            qkv = torch.randn(batch, new_len, 3, heads, head_dim, device=device, dtype=dtype)
            q, k, v = qkv.unbind(2)  # strided views of a fused qkv
            k_cache = torch.randn(batch, heads, max_len, head_dim, device=device, dtype=dtype)
            v_cache = torch.randn_like(k_cache)
            seqlens = torch.tensor([0, 7, 17][:batch], device=device, dtype=torch.int32)
            if max_len > 19:
                seqlens = torch.tensor([max_len - new_len - 1, 250][:batch], device=device, dtype=torch.int32)
            ops.kv_cache_attention(q, k, v, k_cache, v_cache, seqlens, head_dim**-0.5)
            # Offset by one element: no vector loads possible.
            flat = torch.randn(3 * batch * new_len * heads * head_dim + 1, device=device, dtype=dtype)[1:]
            q, k, v = flat.view(3, batch, new_len, heads, head_dim).unbind(0)
            ops.kv_cache_attention(q, k, v, k_cache, v_cache, seqlens, head_dim**-0.5)


def cfg_filter_sample(device):
    g = torch.Generator(device=device).manual_seed(0)
    for dtype in DTYPES:
        for rows, vocab in ((37, 256), (5, 37), (4, 600)):  # whole chunks, scalar tail only, chunks + tail
            logits = torch.randn(2 * rows, vocab, device=device, dtype=dtype)
            logits[3 % rows, :] = float("-inf")
            misaligned = torch.randn(2 * rows, vocab + 1, device=device, dtype=dtype)[:, 1:]
            cfg = torch.full((rows,), 3.0, device=device)
            for greedy in (False, True):
                ops.cfg_filter_sample(logits, cfg, 1.05, 1e-3, 0.456, 0.224, greedy, g)
                ops.cfg_filter_sample(misaligned, cfg, 1.05, 1e-3, 0.485, 0.229, greedy, g)
                ops.cfg_filter_sample(logits[:rows], None, 1.0, 0.0, 0.5, 0.5, greedy, g)


OPS = {"patchify_gather": patchify_and_gather, "kv_cache_attention": kv_cache_attention,
       "cfg_filter_sample": cfg_filter_sample}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    parser.add_argument("--only", choices=sorted(OPS), help="run one operator family")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        print("sanitize_ops: no CUDA device")
        return 1
    for name, run in OPS.items():
        if args.only in (None, name):
            run(args.device)
    if args.device == "cuda":
        torch.cuda.synchronize()
    print(f"sanitize_ops: every op ran on {args.device}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
