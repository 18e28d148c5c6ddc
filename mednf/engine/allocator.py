"""Keep large freed blocks inside the process on the CPU (glibc ``mallopt``), once per process.

Why: glibc serves every allocation above its mmap threshold (at most 32 MiB, and a 64² batch of 8 signals
at L = 256 is a 32 MiB ``[B, N, L]`` tensor) with a fresh ``mmap`` and gives it back on ``free``. Every
such tensor then costs a page fault and a kernel zeroing per 4 KiB page on first touch: measured on the
2-core Xeon, ``torch.sin`` of a ``[32768, 256]`` tensor took 12.0 ms with the default and 2.15 ms with
mmap off, a GEMM of that height 0.16 vs 0.26 TFLOP/s, and a paper-config meta-iteration at B = 8 10.8 s vs
7.4 s (benchmarks/RESULTS.md, "Allocator"). The same happens to the 2048-row working sets of smaller
configurations whenever the heap top is trimmed between two allocations.

What :func:`keep_freed_memory` sets (``mallopt``, process-wide, from the first meta-iteration or fit on
the CPU): ``M_MMAP_MAX = 0`` (large blocks come from the heap too) and ``M_TRIM_THRESHOLD`` = 2 GiB − 1
(the most ``mallopt`` takes; freed memory stays for reuse instead of being unmapped). The resident set
then stays near the peak after a phase ends; :func:`mednf.engine.planner.release_free_memory`
(``malloc_trim``) gives it back between meta-learning and fitting, where a build plans again.

Nothing is changed where the C library is not glibc (macOS, musl), or when ``MEDNF_MALLOC=system`` is set
(for users who tune their allocator themselves, e.g. with jemalloc or tcmalloc preloaded).
"""

from __future__ import annotations

import ctypes
import os

_M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter numbers (malloc.h)
_M_MMAP_MAX = -4
_TRIM_THRESHOLD = 2**31 - 1  # mallopt takes an int

_state: dict[str, bool] = {}


def keep_freed_memory() -> bool:
    """Apply the settings of the module docstring once; True when they are in effect."""
    if "applied" in _state:
        return _state["applied"]
    applied = False
    if os.environ.get("MEDNF_MALLOC", "").lower() != "system":
        try:
            mallopt = ctypes.CDLL(None).mallopt
        except (OSError, AttributeError):  # not glibc
            mallopt = None
        if mallopt is not None:
            mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
            applied = bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD))
    _state["applied"] = applied
    return applied


__all__ = ["keep_freed_memory"]
