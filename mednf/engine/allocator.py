"""Opt-in: keep large freed blocks inside the process while a meta-iteration runs on the CPU (glibc ``mallopt``).

Why: glibc serves every allocation above its mmap threshold (at most 32 MiB, and a 64² batch of 8 signals
at L = 256 is a 32 MiB ``[B, N, L]`` tensor) with a fresh ``mmap`` and gives it back on ``free``. Every
such tensor then costs a page fault and a kernel zeroing per 4 KiB page on first touch: measured on the
2-core Xeon, ``torch.sin`` of a ``[32768, 256]`` tensor took 12.0 ms with the default and 2.15 ms with
mmap off, a GEMM of that height 0.16 vs 0.26 TFLOP/s, and a paper-config meta-iteration at B = 8 10.8 s vs
7.4 s (benchmarks/RESULTS.md, issue #10, "The CPU allocator").

What :func:`graph_memory` does (``mallopt``, process-wide, around each meta-iteration on the CPU): on
entry ``M_MMAP_MAX = 0`` (large blocks come from the heap too) and ``M_TRIM_THRESHOLD`` = 2 GiB − 1 (the
most ``mallopt`` takes: the freed graph stays for the next iteration instead of being unmapped and faulted
in again); on exit ``M_MMAP_MAX`` back to glibc's 65536 with ``M_MMAP_THRESHOLD`` = 32 MiB (glibc's
largest), so what runs between meta-iterations — the fits — gets its blocks above 32 MiB from ``mmap``
again. Why not for the fits too: measured with the setting left on, a fit of 32 signals at K6 L128 on 64²
peaked at 475 MiB instead of 234 MiB (heap fragmentation by its ``[b, N, L]`` evaluation tensors), and
the fit gains nothing from it (its working set is chunked). The freed graph stays resident after the
last iteration; :func:`mednf.engine.memory.release_free_memory` (``malloc_trim``) gives it back where a
build plans its fits.

**Opt-in** (``MEDNF_MALLOC=keep``): with the setting on, two test builds in one process were not
byte-identical once (1 of 3 full test runs), and the same tiny meta-learning run gave a bitwise different θ
in 1 of 9 runs; with glibc's default, all those runs were identical. But the default is not immune: of
four full PhantomNF builds with it (2026-12-02, separate processes), the first one in a freshly made venv
differed at rounding level from its first iterations. Whether buffer placement or an MKL/oneDNN
first-call effect is the cause is not settled (benchmarks/RESULTS.md). mednf
promises byte-identical rebuilds (tests/test_data_layer.py), so the speed-up is the user's choice. By
default the planner gets most of it another way: on the CPU it splits a meta-iteration into parts whose
tensors are small enough for glibc's heap (:mod:`mednf.engine.planner`, "Small parts on the CPU"); with
``MEDNF_MALLOC=keep`` it does not, since every block is reused then.
Nothing is changed where the C library is not glibc (macOS, musl).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
from collections.abc import Callable, Iterator

_M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter numbers (malloc.h)
_M_MMAP_THRESHOLD = -3
_M_MMAP_MAX = -4
_TRIM_THRESHOLD = 2**31 - 1  # mallopt takes an int
_MMAP_MAX_DEFAULT = 65536
_MMAP_THRESHOLD_MAX = 32 * 2**20

_mallopt: list[Callable[[int, int], int] | None] = []
_state: dict[str, bool] = {}


def _get_mallopt() -> Callable[[int, int], int] | None:
    """The glibc ``mallopt`` when ``MEDNF_MALLOC=keep`` asks for the setting, else None."""
    if not _mallopt:
        found = None
        if os.environ.get("MEDNF_MALLOC", "").lower() == "keep":
            try:
                found = ctypes.CDLL(None).mallopt
                found.argtypes = [ctypes.c_int, ctypes.c_int]
            except (OSError, AttributeError):  # not glibc
                found = None
        _mallopt.append(found)
    return _mallopt[0]


def keeps_memory() -> bool:
    """Whether ``MEDNF_MALLOC=keep`` is in effect here (glibc found): the meta-iterations then reuse every
    freed block, and the planner need not keep tensors small (:data:`mednf.engine.planner.HEAP_TENSOR_BYTES`)."""
    return _get_mallopt() is not None


@contextlib.contextmanager
def graph_memory() -> Iterator[bool]:
    """Inside: large freed blocks stay in the process (module docstring); yields whether that is in effect."""
    mallopt = _get_mallopt()
    applied = (mallopt is not None and bool(mallopt(_M_MMAP_MAX, 0))
               and bool(mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD)))
    _state["graph_memory_used"] = applied
    try:
        yield applied
    finally:
        if mallopt is not None:
            mallopt(_M_MMAP_MAX, _MMAP_MAX_DEFAULT)
            mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX)


_FIT_TRIM_THRESHOLD = 32 * 2**20
_FIT_MMAP_THRESHOLD = 4 * 2**20


@contextlib.contextmanager
def fit_memory() -> Iterator[None]:
    """Around a fit on the CPU, after :func:`graph_memory` was used in this process: glibc's behaviour once
    it has warmed up (blocks above 4 MiB from ``mmap``, heap tops above 32 MiB trimmed) instead of the
    meta-iterations' keep-everything, so a fit after meta-learning peaks where the planner expects (a
    planned fit at K5 L96 on 16³ went 1 MiB over its 600 MiB budget without it). Does nothing in a process
    that never ran a meta-iteration (glibc's own adaptive thresholds are then still in place)."""
    mallopt = _get_mallopt() if _state.get("graph_memory_used") else None
    if mallopt is not None:
        mallopt(_M_TRIM_THRESHOLD, _FIT_TRIM_THRESHOLD)
        mallopt(_M_MMAP_THRESHOLD, _FIT_MMAP_THRESHOLD)
    yield


__all__ = ["fit_memory", "graph_memory", "keeps_memory"]
