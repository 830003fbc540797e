"""Smoke test of the CMake build of the extension (`make cmake-check`):

    python tests/packaging/cmake_smoke.py build/cmake

loads the `_C*.so` that CMake built in that folder into this fresh process and checks it: every
operator declared in a csrc/*/schema.cpp is registered with a CPU kernel (and a CUDA kernel where
its folder has a cuda.cu, in a CUDA build), and patchify / unpatchify and kv_cache_attention match
plain-PyTorch references written here. Exits non-zero on any mismatch.

fractal_ext is not imported: it would load its own fractal_ext/_C*.so (the setup.py build, which may
sit in the source tree too) and register the same schemas a second time.
"""
import glob
import importlib.util
import math
import os
import re
import sys

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def load(build_dir):
    paths = glob.glob(os.path.join(build_dir, "_C*.so"))
    if len(paths) != 1:
        sys.exit(f"cmake_smoke: expected one _C*.so in {build_dir}, found {paths}")
    (path,) = paths
    assert "fractal_ext" not in sys.modules and "fractal_ext._C" not in sys.modules
    torch.ops.load_library(path)  # runs the schema and kernel registrations
    spec = importlib.util.spec_from_file_location("_C", path)  # the same handle: its build constants
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return path, module


def declared_ops():
    """{operator name: whether its folder has a CUDA kernel}, from csrc/*/schema.cpp."""
    ops = {}
    for schema in sorted(glob.glob(os.path.join(ROOT, "csrc", "*", "schema.cpp"))):
        has_cuda = os.path.exists(os.path.join(os.path.dirname(schema), "cuda.cu"))
        with open(schema) as f:
            for name in re.findall(r'm\.def\(\s*"(\w+)\(', f.read()):
                ops[name] = has_cuda
    return ops


def check_registrations(with_cuda):
    ops = declared_ops()
    assert ops, "no m.def(...) found in csrc/*/schema.cpp"
    for name, has_cuda in ops.items():
        qualified = f"fractal_ext::{name}"
        assert torch._C._dispatch_has_kernel_for_dispatch_key(qualified, "CPU"), f"{qualified}: no CPU kernel"
        if with_cuda and has_cuda:
            assert torch._C._dispatch_has_kernel_for_dispatch_key(qualified, "CUDA"), f"{qualified}: no CUDA kernel"
    return ops


def patchify_reference(images, p):
    b, c, h, w = images.shape
    x = torch.einsum("nchpwq->nhwcpq", images.reshape(b, c, h // p, p, w // p, p))
    return x.reshape(b, (h // p) * (w // p), c * p * p)


def check_patchify():
    images = torch.randn(2, 3, 8, 12)
    for x in (images, images.transpose(2, 3)):  # contiguous and strided
        for p in (1, 2, 4):
            patches = torch.ops.fractal_ext.patchify(x, p)
            assert torch.equal(patches, patchify_reference(x, p)), f"patchify differs (p={p}, shape {tuple(x.shape)})"
    square = torch.randn(2, 3, 8, 8, dtype=torch.bfloat16)
    patches = torch.ops.fractal_ext.patchify(square, 4)
    assert torch.equal(torch.ops.fractal_ext.unpatchify(patches, 4), square), "unpatchify(patchify(x)) != x"


def kv_cache_attention_reference(q, k, v, k_cache, v_cache, cache_seqlens, scale):
    """The caches after the append, and the causal attention of each new query over them."""
    k_cache, v_cache = k_cache.clone(), v_cache.clone()
    batch, new_len, heads, _ = q.shape
    out = torch.empty_like(q)
    for b in range(batch):
        start = int(cache_seqlens[b])
        k_cache[b, :, start:start + new_len] = k[b].transpose(0, 1)
        v_cache[b, :, start:start + new_len] = v[b].transpose(0, 1)
        for t in range(new_len):
            visible = start + t + 1
            scores = torch.einsum("hd,hsd->hs", q[b, t], k_cache[b, :, :visible]) * scale
            out[b, t] = torch.einsum("hs,hsd->hd", scores.softmax(-1), v_cache[b, :, :visible])
    return out, k_cache, v_cache


def check_kv_cache_attention():
    batch, new_len, heads, head_dim, max_len = 2, 3, 4, 16, 12
    q, k, v = (torch.randn(batch, new_len, heads, head_dim) for _ in range(3))
    k_cache = torch.randn(batch, heads, max_len, head_dim)
    v_cache = torch.randn(batch, heads, max_len, head_dim)
    cache_seqlens = torch.tensor([0, 5], dtype=torch.int32)
    scale = 1.0 / math.sqrt(head_dim)
    expected, expected_k, expected_v = kv_cache_attention_reference(q, k, v, k_cache, v_cache, cache_seqlens, scale)
    out = torch.ops.fractal_ext.kv_cache_attention(q, k, v, k_cache, v_cache, cache_seqlens, scale)
    assert torch.equal(k_cache, expected_k) and torch.equal(v_cache, expected_v), "kv_cache_attention: caches differ"
    error = (out - expected).abs().max().item()
    assert error < 1e-5, f"kv_cache_attention: output differs from the reference by {error}"


def main(argv):
    if len(argv) != 2:
        sys.exit("usage: python tests/packaging/cmake_smoke.py CMAKE_BUILD_DIR")
    path, module = load(argv[1])
    torch.manual_seed(0)
    ops = check_registrations(module.WITH_CUDA)
    check_patchify()
    check_kv_cache_attention()
    kind = f"CUDA build, archs {module.CUDA_ARCHS}" if module.WITH_CUDA else "CPU-only build"
    print(f"cmake_smoke: {os.path.relpath(path, ROOT)} ({kind}): {len(ops)} operators registered; "
          "patchify, unpatchify and kv_cache_attention match their references")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
