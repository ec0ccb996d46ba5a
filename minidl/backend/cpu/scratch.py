"""A pool of large work buffers (im2col columns, their gradients, Winograd tiles) reused between
steps of the same shape instead of asking the allocator for fresh pages each time.

Ownership is explicit. ``take`` hands a buffer out and the pool forgets it: from then on it
belongs to the caller, and nothing the pool does can touch it. It comes back only when its owner
says so: ``give_back(array)`` when the caller is done with it (and holds no view of it), or
``lend(array, owner)`` to return it when ``owner`` (the Function that saved it for backward) is
freed. A buffer that is never given back is an ordinary array that the garbage collector frees.
So the pool never has to guess from reference counts whether a buffer is still in use.
"""
from __future__ import annotations

import threading
import weakref

import numpy as np


class ScratchPool:
    def __init__(self, max_bytes=256 << 20):
        self.max_bytes = max_bytes  # free buffers kept, in bytes
        self.free = []              # buffers nobody owns, oldest first
        # id(buffer) -> buffer for buffers handed out, held weakly: one never given back is
        # freed like any array
        self._out = weakref.WeakValueDictionary()
        self._lock = threading.Lock()

    def take(self, shape, dtype):
        """An uninitialised C-contiguous array of ``shape`` and ``dtype``, owned by the caller:
        the smallest free buffer that fits, or a new one."""
        dtype = np.dtype(dtype)
        nbytes = int(np.prod(shape)) * dtype.itemsize
        with self._lock:
            best = None
            for i, buf in enumerate(self.free):
                if buf.nbytes >= nbytes and (best is None or buf.nbytes < self.free[best].nbytes):
                    best = i
            buf = self.free.pop(best) if best is not None else np.empty(nbytes, dtype=np.uint8)
            self._out[id(buf)] = buf
        return buf[:nbytes].view(dtype).reshape(shape)

    def give_back(self, array):
        """Return a buffer from ``take`` (the array ``take`` gave, or a view of it) to the pool.
        The caller promises that neither it nor anything it handed the array to still uses it.
        Arrays the pool did not hand out are ignored, so callers need not check."""
        if array is None:
            return
        base = array if array.base is None else array.base
        with self._lock:
            if self._out.get(id(base)) is not base:
                return
            del self._out[id(base)]
            self.free.append(base)
            self._trim()

    def lend(self, array, owner):
        """Give ``array`` (from ``take``) back when ``owner`` is freed: for a buffer saved by a
        Function for its backward pass, which must not be reused while the graph holds it."""
        if array is not None:
            weakref.finalize(owner, self.give_back, array)

    def _trim(self):
        """Drop free buffers, oldest first, until at most max_bytes are kept."""
        total = sum(b.nbytes for b in self.free)
        while self.free and total > self.max_bytes:
            total -= self.free.pop(0).nbytes


pool = ScratchPool()
