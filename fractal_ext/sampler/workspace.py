"""Buffers the fast sampler allocates once and reuses for every call of a level: KV caches (grown
to the largest row count seen, handed out as leading slices, which stay contiguous), the constant
cache-position vectors the attention operator reads, and weights prepared for a compute path
(bf16 copies, reordered layouts), made once per model and remade when the weights change."""
import threading
import weakref

import torch

from fractal_ext.sampler import onednn

# The row count oneDNN lays out its packed weights for: the CPU bf16 mode's block steps of 9 or
# more rows, mostly 16 (8 images with their guidance twins).
ONEDNN_ROWS_HINT = 16


class _ThreadBuffers(threading.local):
    def __init__(self):
        self.caches = {}
        self.positions = {}


class Workspace:
    """The buffers are per thread: sampling runs of one model in concurrent threads (a server's
    thread pool) would otherwise write into each other's KV caches."""

    def __init__(self):
        self._buffers = _ThreadBuffers()
        self._prepared = {}  # read-only once made: shared by the threads

    def prepared(self, key, sources, make):
        """`make()`'s result for the tensors `sources` as they are now: made on first use and again
        when one of them was replaced or changed in place (an optimiser step, load_state_dict), so
        a prepared copy never holds stale weights. Kept as long as this workspace (the model's
        fast sampler)."""
        stamp = tuple((t.data_ptr(), t._version) for t in sources)
        entry = self._prepared.get(key)
        if entry is None or entry[0] != stamp or any(ref() is not t for ref, t in zip(entry[1], sources)):
            entry = (stamp, tuple(weakref.ref(t) for t in sources), make())
            self._prepared[key] = entry
        return entry[2]

    def bf16_copy(self, weight: torch.Tensor) -> torch.Tensor:
        """A bf16 copy of a weight matrix, made once (see `prepared`)."""
        return self.prepared(("bf16", id(weight)), (weight,), lambda: weight.detach().to(torch.bfloat16).contiguous())

    def onednn_bf16_copy(self, weight: torch.Tensor) -> torch.Tensor:
        """A bf16 copy of a weight matrix in oneDNN's blocked layout, made once (see `prepared`)."""
        return self.prepared(("onednn bf16", id(weight)), (weight,),
                             lambda: onednn.reorder(weight.to(torch.bfloat16), ONEDNN_ROWS_HINT))

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
