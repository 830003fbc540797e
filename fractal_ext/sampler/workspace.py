"""Buffers the fast sampler allocates once per sampling run and reuses for every call of a level:
KV caches (grown to the largest row count seen, handed out as leading slices, which stay
contiguous) and the constant cache-position vectors the attention operator reads."""
import threading

import torch

# The CUDA attention kernel reads head rows as 16-byte vectors, so it takes head dims that are
# multiples of 8 (every official model's are).
CUDA_HEAD_DIM_MULTIPLE = 8


def cache_head_dim(head_dim: int, device) -> int:
    """The width of a KV-cache row for heads of head_dim on `device`: on CUDA, rounded up to the
    kernel's multiple (fractal_ext.sampler.decode.attention_on_caches pads q, k and v with zeros,
    which add nothing to q.k, and cuts the zero columns off the output); head_dim elsewhere."""
    if torch.device(device).type != "cuda":
        return head_dim
    return -(-head_dim // CUDA_HEAD_DIM_MULTIPLE) * CUDA_HEAD_DIM_MULTIPLE


class _ThreadBuffers(threading.local):
    def __init__(self):
        self.caches = {}
        self.positions = {}


class Workspace:
    """The buffers are per thread: sampling runs of one model in concurrent threads (a server's
    thread pool) would otherwise write into each other's KV caches."""

    def __init__(self):
        self._buffers = _ThreadBuffers()

    def kv_cache(self, key, rows, heads, max_len, head_dim, dtype, device):
        caches = self._buffers.caches
        cached = caches.get(key)
        width = cache_head_dim(head_dim, device)
        if (cached is None or cached[0].shape[0] < rows or cached[0].shape[3] != width or cached[0].dtype != dtype
                or cached[0].device != device):
            grown = rows if cached is None else max(rows, 2 * cached[0].shape[0])
            shape = (grown, heads, max_len, width)
            cached = (torch.zeros(shape, dtype=dtype, device=device), torch.zeros(shape, dtype=dtype, device=device))
            caches[key] = cached
        return cached[0][:rows], cached[1][:rows]

    def positions(self, position: int, rows: int, device) -> torch.Tensor:
        """int32 [rows] filled with `position`: every row appends at the same cache position."""
        key = (position, torch.device(device))
        positions = self._buffers.positions
        cached = positions.get(key)
        if cached is None or cached.shape[0] < rows:
            grown = rows if cached is None else max(rows, 2 * cached.shape[0])
            cached = torch.full((grown,), position, dtype=torch.int32, device=device)
            positions[key] = cached
        return cached[:rows]
