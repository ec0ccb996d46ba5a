"""PyTorch's CPU order among equal values, for topk, kthvalue and sort(stable=False).

Which of several equal values these ops return, and in which order, is not in PyTorch's docs:
on the CPU it is whatever its algorithms leave. topk runs the C++ standard library's
nth_element then sort (partial_sort where k * 64 <= n), sort(stable=False) runs std::sort, and
kthvalue ATen's own median-of-three quickselect, each on (value, index) pairs compared by value
alone (NaN as the largest). The functions below redo those steps (libstdc++'s introselect,
introsort, heap select and insertion sort) on a row of values and its indices, so the indices
(and where gradients go) are torch's. The callers run them only on the rows where ties change
the answer; everything else is decided by the values and comes from argsort.

They are plain Python on NumPy arrays, compiled by numba on the first call (``rows_kernels``),
so ``import minidl`` does not load numba; without numba they run as Python.
"""
from __future__ import annotations

import os

import numpy as np


def _before(x, y, largest):
    """Whether x goes before y: larger (smaller) first, NaN first (last)."""
    if largest:
        return (x != x and y == y) or x > y
    return (x == x and y != y) or x < y


def _swap(a, ix, i, j):
    a[i], a[j] = a[j], a[i]
    ix[i], ix[j] = ix[j], ix[i]


def _adjust_heap(a, ix, first, hole, length, vk, vi, largest):
    top = hole
    second = hole
    while second < (length - 1) // 2:
        second = 2 * (second + 1)
        if _before(a[first + second], a[first + second - 1], largest):
            second -= 1
        a[first + hole] = a[first + second]
        ix[first + hole] = ix[first + second]
        hole = second
    if length % 2 == 0 and second == (length - 2) // 2:
        second = 2 * (second + 1)
        a[first + hole] = a[first + second - 1]
        ix[first + hole] = ix[first + second - 1]
        hole = second - 1
    parent = (hole - 1) // 2
    while hole > top and _before(a[first + parent], vk, largest):
        a[first + hole] = a[first + parent]
        ix[first + hole] = ix[first + parent]
        hole = parent
        parent = (hole - 1) // 2
    a[first + hole] = vk
    ix[first + hole] = vi


def _heap_select(a, ix, first, middle, last, largest):
    length = middle - first
    if length >= 2:
        for parent in range((length - 2) // 2, -1, -1):
            _adjust_heap(a, ix, first, parent, length, a[first + parent], ix[first + parent],
                         largest)
    for i in range(middle, last):
        if _before(a[i], a[first], largest):
            vk, vi = a[i], ix[i]
            a[i], ix[i] = a[first], ix[first]
            _adjust_heap(a, ix, first, 0, length, vk, vi, largest)


def _partial_sort(a, ix, first, middle, last, largest):
    _heap_select(a, ix, first, middle, last, largest)
    while middle - first > 1:  # sort_heap
        middle -= 1
        vk, vi = a[middle], ix[middle]
        a[middle], ix[middle] = a[first], ix[first]
        _adjust_heap(a, ix, first, 0, middle - first, vk, vi, largest)


def _partition_pivot(a, ix, first, last, largest):
    """The median of three moved to ``first``, then an unguarded partition around it."""
    p, b, c = first + 1, first + (last - first) // 2, last - 1
    if _before(a[p], a[b], largest):
        if _before(a[b], a[c], largest):
            m = b
        elif _before(a[p], a[c], largest):
            m = c
        else:
            m = p
    elif _before(a[p], a[c], largest):
        m = p
    elif _before(a[b], a[c], largest):
        m = c
    else:
        m = b
    _swap(a, ix, first, m)
    pivot = a[first]
    lo, hi = first + 1, last
    while True:
        while _before(a[lo], pivot, largest):
            lo += 1
        hi -= 1
        while _before(pivot, a[hi], largest):
            hi -= 1
        if lo >= hi:
            return lo
        _swap(a, ix, lo, hi)
        lo += 1


def _linear_insert(a, ix, last, largest):
    vk, vi = a[last], ix[last]
    while _before(vk, a[last - 1], largest):
        a[last], ix[last] = a[last - 1], ix[last - 1]
        last -= 1
    a[last], ix[last] = vk, vi


def _insertion_sort(a, ix, first, last, largest):
    for i in range(first + 1, last):
        if _before(a[i], a[first], largest):
            vk, vi = a[i], ix[i]
            for j in range(i, first, -1):
                a[j], ix[j] = a[j - 1], ix[j - 1]
            a[first], ix[first] = vk, vi
        else:
            _linear_insert(a, ix, i, largest)


def _log2(n):
    depth = 0
    while n > 1:
        n >>= 1
        depth += 1
    return depth


def _nth_element(a, ix, nth, n, largest):
    first, last = 0, n
    depth = 2 * _log2(n)
    while last - first > 3:
        if depth == 0:
            _heap_select(a, ix, first, nth + 1, last, largest)
            _swap(a, ix, first, nth)
            return
        depth -= 1
        cut = _partition_pivot(a, ix, first, last, largest)
        if cut <= nth:
            first = cut
        else:
            last = cut
    _insertion_sort(a, ix, first, last, largest)


def _sort(a, ix, n, largest):
    """std::sort of the first n: introsort (the ranges it leaves are independent, so a stack
    of them gives what its recursion gives), then the final insertion sort."""
    if n <= 0:
        return
    stack = [(0, n, 2 * _log2(n))]
    while len(stack):
        first, last, depth = stack.pop()
        while last - first > 16:
            if depth == 0:
                _partial_sort(a, ix, first, last, last, largest)
                break
            depth -= 1
            cut = _partition_pivot(a, ix, first, last, largest)
            stack.append((cut, last, depth))
            last = cut
    _insertion_sort(a, ix, 0, min(n, 16), largest)
    for i in range(16, n):
        _linear_insert(a, ix, i, largest)


def _kth(a, ix, k):
    """ATen's quickselect (NaN as the largest): the index it leaves at position k."""
    lo, hi = 0, a.shape[0] - 1
    while hi > lo + 1:
        mid = lo + (hi - lo) // 2
        _swap(a, ix, mid, lo + 1)
        if _before(a[hi], a[lo + 1], False):
            _swap(a, ix, lo + 1, hi)
        if _before(a[hi], a[lo], False):
            _swap(a, ix, lo, hi)
        if _before(a[lo], a[lo + 1], False):
            _swap(a, ix, lo + 1, lo)
        i, j = lo + 1, hi
        pivot = a[lo]
        while True:
            i += 1
            while _before(a[i], pivot, False):
                i += 1
            j -= 1
            while _before(pivot, a[j], False):
                j -= 1
            if j < i:
                break
            _swap(a, ix, i, j)
        _swap(a, ix, lo, j)
        if j <= k:
            lo = i
        if j >= k:
            hi = j - 1
    if hi == lo + 1 and _before(a[hi], a[lo], False):
        _swap(a, ix, lo, hi)
    return ix[k]


def topk_rows(rows, k, largest, out):
    """``out[r]``: the indices torch.topk(sorted=True) gives for each row of ``rows``."""
    n = rows.shape[1]
    for r in range(rows.shape[0]):
        a = rows[r].copy()
        ix = np.arange(n)
        if k * 64 <= n:
            _partial_sort(a, ix, 0, k, n, largest)
        elif k > 0:
            _nth_element(a, ix, k - 1, n, largest)
            _sort(a, ix, k - 1, largest)
        out[r] = ix[:k]


def sort_rows(rows, descending, out):
    """``out[r]``: the indices torch.sort(stable=False) gives for each row."""
    n = rows.shape[1]
    for r in range(rows.shape[0]):
        a = rows[r].copy()
        ix = np.arange(n)
        _sort(a, ix, n, descending)
        out[r] = ix


def kth_rows(rows, k, out):
    """``out[r]``: the index torch.kthvalue(row, k + 1) gives for each row."""
    n = rows.shape[1]
    for r in range(rows.shape[0]):
        out[r] = _kth(rows[r].copy(), np.arange(n), k)


_COMPILED = None
_ORDER = ("_before", "_swap", "_adjust_heap", "_heap_select", "_partial_sort",
          "_partition_pivot", "_linear_insert", "_insertion_sort", "_log2", "_nth_element",
          "_sort", "_kth", "topk_rows", "sort_rows", "kth_rows")


def rows_kernels():
    """(topk_rows, sort_rows, kth_rows), compiled by numba on the first call where it loads
    (the Python functions otherwise)."""
    global _COMPILED
    if _COMPILED is None:
        found = globals()
        if os.environ.get("MINIDL_DISABLE_NUMBA", "") in ("", "0"):
            try:
                from numba import njit

                for name in _ORDER:  # callees first: each call resolves to a compiled one
                    found[name] = njit(cache=True)(found[name])
            except Exception:  # noqa: BLE001  (no numba, or one that fails: Python instead)
                pass
        _COMPILED = (found["topk_rows"], found["sort_rows"], found["kth_rows"])
    return _COMPILED


def keys(rows):
    """Rows as numba takes them: 16-bit floats widened to float32 (exactly), bools as uint8."""
    if rows.dtype == np.bool_:
        return rows.view(np.uint8)
    if rows.dtype.itemsize == 2 and rows.dtype.kind not in "iu":
        return rows.astype(np.float32)
    return rows
