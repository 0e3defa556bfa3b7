"""Two-pointer sweeps for the offline builder's windowed distinct counts and maxima (numba).

Each query `q` asks about the contributions with index in `[lo[q], hi[q])`. Visited in `order`
(sorted by entity, then time) both ends move forward, so one pass with a counter per value
(distinct) or a monotonic deque (max) answers every query in O(contributions + queries).
A query whose range is empty is answered without moving the window; a range that steps back
(which sorted input does not produce) restarts the window, so the result is right either way.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from numba import njit

I64 = npt.NDArray[np.int64]


@njit(cache=True, nogil=True)
def distinct_sweep(values: I64, lo: I64, hi: I64, order: I64) -> I64:  # pragma: no cover
    out = np.zeros(len(lo), dtype=np.int64)
    counts = np.zeros(values.max() + 1 if len(values) else 1, dtype=np.int64)
    cur_lo = 0
    cur_hi = 0
    distinct = 0
    for q in order:
        a = lo[q]
        b = hi[q]
        if a >= b:
            continue
        if a < cur_lo or a > cur_hi:
            for j in range(cur_lo, cur_hi):
                counts[values[j]] -= 1
            distinct = 0
            cur_lo = a
            cur_hi = a
        while cur_hi < b:
            v = values[cur_hi]
            if counts[v] == 0:
                distinct += 1
            counts[v] += 1
            cur_hi += 1
        while cur_lo < a:
            v = values[cur_lo]
            counts[v] -= 1
            if counts[v] == 0:
                distinct -= 1
            cur_lo += 1
        out[q] = distinct
    return out


@njit(cache=True, nogil=True)
def max_sweep(values: I64, lo: I64, hi: I64, order: I64) -> I64:  # pragma: no cover
    out = np.zeros(len(lo), dtype=np.int64)
    deque = np.empty(len(values) + 1, dtype=np.int64)
    head = 0
    tail = 0
    cur_lo = 0
    cur_hi = 0
    for q in order:
        a = lo[q]
        b = hi[q]
        if a >= b:
            continue
        if a < cur_lo or a > cur_hi:
            head = 0
            tail = 0
            cur_lo = a
            cur_hi = a
        while cur_hi < b:
            v = values[cur_hi]
            while tail > head and values[deque[tail - 1]] <= v:
                tail -= 1
            deque[tail] = cur_hi
            tail += 1
            cur_hi += 1
        cur_lo = a
        while head < tail and deque[head] < cur_lo:
            head += 1
        out[q] = values[deque[head]]
    return out
