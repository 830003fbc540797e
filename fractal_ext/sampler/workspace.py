"""Buffers the fast sampler allocates once per sampling run and reuses for every call of a level:
KV caches (grown to the largest row count seen, handed out as leading slices, which stay
contiguous) and the constant cache-position vectors the attention operator reads."""
import threading

import torch

class _ThreadBuffers(threading.local):
    def __init__(self):
        self.caches = {}
        self.positions = {}


class Workspace:
    """The buffers are per thread: sampling runs of one model in concurrent threads (a server's
    thread pool) would otherwise write into each other's KV caches."""

    def __init__(self):
        self._buffers = _ThreadBuffers()

    def kv_cache(self, key, rows, heads, max_len, width, dtype, device):
        """(k, v) caches [rows, heads, max_len, width]; `width` is the head dim, padded where the
        run's compute paths ask for it (ComputePaths.cache_head_dim)."""
        caches = self._buffers.caches
        cached = caches.get(key)
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
