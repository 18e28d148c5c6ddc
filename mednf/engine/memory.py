"""The host's and the device's memory as the planner needs it: sizes, the budget, and what the process holds.

Everything here probes the machine (``/proc``, the cgroup, glibc, ``torch.cuda``); the model of what a
meta-iteration or a fit costs is :mod:`mednf.engine.planner`.

The budget
----------
``--memory-budget 8GB`` (``BuildOptions.memory_budget``), or by default a safe share of what is free:
60 % of ``MemAvailable`` (``/proc/meminfo``, or the cgroup's limit when that is lower) on the CPU, 80 % of
``torch.cuda.mem_get_info`` on CUDA, divided among the ranks that share the machine or the device
(``LOCAL_WORLD_SIZE``; under torchrun every rank plans for itself, for its own share of the batch). On the
CPU the budget bounds the whole process (its peak resident set, ``VmHWM``); on CUDA it bounds the engine's
device memory (``torch.cuda.max_memory_allocated``). What the process already uses when it plans (``VmRSS``:
Python, torch, the source images; on CUDA ``torch.cuda.memory_allocated``) is subtracted first.
"""

from __future__ import annotations

import ctypes
import math
import os
import platform
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mednf.errors import ConfigError

if TYPE_CHECKING:
    import torch

CPU_SHARE = 0.6  # default budget: this share of MemAvailable on the CPU …
CUDA_SHARE = 0.8  # … and of the free device memory on CUDA

_UNITS = {"": 1, "b": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40,
          "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12}
_SIZE = re.compile(r"\s*([+-]?[0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([A-Za-z]*)\s*\Z")


# ---------------------------------------------------------------------------------------------- sizes


def format_bytes(n: float) -> str:
    """``1.5 GiB``, ``320.0 MiB`` — the planner's way of printing sizes."""
    for unit, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(n) >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} B"


def parse_memory(value: str | float, what: str = "--memory-budget") -> int:
    """``"8GB"`` → 8·10⁹, ``"8GiB"`` or ``"8G"`` → 8·2³⁰, ``"512MB"``, ``"2e9"`` or an int → bytes.

    KB/MB/GB/TB are powers of 1000; KiB/MiB/GiB/TiB and the bare K/M/G/T powers of 1024 (case-insensitive).
    Raises a one-line ConfigError for anything else, and for sizes ≤ 0.
    """
    fix = "give a size such as 8GB, 6GiB, 512MB or a number of bytes"
    if isinstance(value, bool):
        raise ConfigError(f"{what} {value!r} is invalid: expected a memory size; {fix}")
    if isinstance(value, (int, float)):
        number, unit = float(value), ""
    else:
        match = _SIZE.match(str(value))
        if match is None or match.group(2).lower() not in _UNITS:
            raise ConfigError(f"{what} {value!r} is invalid: expected a number with an optional unit "
                              f"(B, KB, MB, GB, TB, KiB, MiB, GiB, TiB); {fix}")
        number, unit = float(match.group(1)), match.group(2).lower()
    size = number * _UNITS[unit]
    if not math.isfinite(size) or size < 1:
        raise ConfigError(f"{what} {value!r} is invalid: expected a finite size ≥ 1 byte; {fix}")
    return int(size)


# ---------------------------------------------------------------------------------------------- the host, the process


def _read_kib(path: str, key: str) -> int | None:
    try:
        for line in Path(path).read_text(encoding="ascii", errors="replace").splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _cgroup_room() -> int | None:
    """Bytes the process's cgroup may still use (v2 ``memory.max``, v1 ``limit_in_bytes``), None if unlimited."""
    for limit, usage in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                         ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                          "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            text = Path(limit).read_text().strip()
            if text == "max" or int(text) >= 2**60:
                return None
            return max(0, int(text) - int(Path(usage).read_text().strip()))
        except (OSError, ValueError):
            continue
    return None


def available_host_memory() -> int:
    """``MemAvailable`` (or the cgroup's remaining room, when smaller) in bytes."""
    free = _read_kib("/proc/meminfo", "MemAvailable")
    if free is None:
        try:
            free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError):
            free = 4 * 2**30
    room = _cgroup_room()
    return free if room is None else min(free, room)


def _process_memory(key: str) -> int:
    """``VmRSS`` / ``VmHWM`` of this process in bytes; without /proc, the peak from getrusage (an upper bound)."""
    value = _read_kib("/proc/self/status", key)
    if value is not None:
        return value
    import resource  # Unix only, and needed only without /proc

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if os.uname().sysname == "Darwin" else peak * 1024


def memory_in_use(device: torch.device | str = "cpu") -> int:
    """What the process holds now: resident set (``VmRSS``) on the CPU, allocated tensors on CUDA."""
    import torch  # here, not at the top: the host probes and sizes load without torch (`mednf cache list`)

    device = torch.device(device)
    if device.type == "cuda":
        return int(torch.cuda.memory_allocated(device))
    return _process_memory("VmRSS")


def peak_memory(device: torch.device | str = "cpu") -> int:
    """The process's peak so far: ``VmHWM`` on the CPU, ``torch.cuda.max_memory_allocated`` on CUDA."""
    import torch  # here, not at the top: the host probes and sizes load without torch (`mednf cache list`)

    device = torch.device(device)
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    return _process_memory("VmHWM")


# ---------------------------------------------------------------------------------------------- the budget


@dataclass(frozen=True)
class MemoryBudget:
    """A memory budget in bytes and where it came from (for logs and the manifest)."""

    bytes: int
    origin: str  # "--memory-budget 8GB" or "60% of 21.4 GiB available"

    def __str__(self) -> str:
        return f"{format_bytes(self.bytes)} ({self.origin})"

    def to_dict(self) -> dict[str, Any]:
        """The budget as JSON-ready fields."""
        return {"bytes": self.bytes, "origin": self.origin}


def _local_world() -> int:
    try:
        return max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    except ValueError:
        return 1


def default_budget(device: torch.device | str = "cpu") -> MemoryBudget:
    """A safe share of what is free now, plus what the process already holds (module docstring)."""
    import torch  # here, not at the top: the host probes and sizes load without torch (`mednf cache list`)

    device = torch.device(device)
    ranks = _local_world() if device.type == "cpu" else 1  # on CUDA every rank has its own device
    share = f" / {ranks} ranks" if ranks > 1 else ""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        room = int(CUDA_SHARE * free)
        origin = f"{CUDA_SHARE:.0%} of {format_bytes(free)} free on {device}"
    else:
        free = available_host_memory()
        room = int(CPU_SHARE * free / ranks)
        origin = f"{CPU_SHARE:.0%} of {format_bytes(free)} available{share}"
    return MemoryBudget(memory_in_use(device) + room, origin)


def resolve_budget(value: MemoryBudget | str | float | None, device: torch.device | str = "cpu",
                   what: str = "--memory-budget") -> MemoryBudget:
    """The budget a user gave (a size, see :func:`parse_memory`), or the device's default for None."""
    if isinstance(value, MemoryBudget):
        return value
    if value is None:
        return default_budget(device)
    return MemoryBudget(parse_memory(value, what), f"{what} {value}")


# ---------------------------------------------------------------------------------------------- the C heap


def is_glibc() -> bool:
    """Whether the C library is glibc (the allocator whose mmap threshold the planner's small parts are for)."""
    return platform.libc_ver()[0] == "glibc"


def release_free_memory() -> bool:
    """Give the C heap's free pages back to the OS (glibc ``malloc_trim``), so that the resident set the
    next plan sees is what is really held. Called between meta-learning and fitting: freed autograd graphs
    otherwise stay resident and the next phase's allocations land beside them. False where unavailable."""
    try:
        return bool(ctypes.CDLL(None).malloc_trim(0))
    except (OSError, AttributeError):
        return False


__all__ = ["CPU_SHARE", "CUDA_SHARE", "MemoryBudget", "available_host_memory", "default_budget", "format_bytes",
           "is_glibc", "memory_in_use", "parse_memory", "peak_memory", "release_free_memory", "resolve_budget"]
