"""How long idle OpenMP threads spin before they sleep: bounded, so a build stays fast beside other jobs.

torch's CPU kernels run on an OpenMP thread pool (libgomp in the Linux wheels). Between parallel regions its
threads spin, waiting for the next one: 300,000 spins by default, and at a barrier a thread waits for every
other. On an idle machine that spin is what makes short regions cheap; beside another CPU-bound process the
spinning threads take the cores that the descheduled ones need, and a build ran 7–10× slower
(``benchmarks/RESULTS.md``, "Under load"). ``OMP_WAIT_POLICY=PASSIVE`` (no spin) removes that but costs 2×
on an idle machine. A bounded spin of :data:`SPINCOUNT` keeps most of the idle speed and yields the core
soon enough under load (measured in the same section).

libgomp reads ``GOMP_SPINCOUNT`` once, when torch loads it, so :func:`bound_spinning` must run before
``import torch``: ``import mednf`` calls it. It leaves alone a user's own ``GOMP_SPINCOUNT`` or
``OMP_WAIT_POLICY``, and a process that imported torch first (then it is too late: nothing is set, so
nothing claims an effect it cannot have). Other OpenMP runtimes (Intel's and LLVM's ``KMP_BLOCKTIME``) are
not touched: their builds were not measured here.
"""

from __future__ import annotations

import os
import sys
import time

SPINCOUNT = "10000"
"""Spins of an idle libgomp thread before it sleeps (libgomp's default: 300000; ``PASSIVE``: 0)."""


def bound_spinning() -> bool:
    """Set ``GOMP_SPINCOUNT`` to :data:`SPINCOUNT` unless the user chose a waiting policy or torch is already
    loaded; whether it was set."""
    if "torch" in sys.modules or "GOMP_SPINCOUNT" in os.environ or "OMP_WAIT_POLICY" in os.environ:
        return False
    os.environ["GOMP_SPINCOUNT"] = SPINCOUNT
    return True


def cpu_count() -> int:
    """The cores this process may run on (its affinity mask, else ``os.cpu_count()``)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _busy_and_total() -> tuple[int, int] | None:
    """Jiffies the whole machine spent busy and in all, from ``/proc/stat`` (None where it cannot be read)."""
    try:
        with open("/proc/stat", encoding="ascii") as fh:
            fields = [int(x) for x in fh.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields[:8]) - idle, sum(fields[:8])


def free_cores(window_s: float = 0.1) -> int:
    """How many of this process's cores other processes leave free, sampled over ``window_s`` seconds (at
    least 1): the cores minus the machine's busy share (this process's own CPU time in the window taken out).
    Where ``/proc/stat`` cannot be read, all cores."""
    cores = cpu_count()
    before, mine = _busy_and_total(), os.times()
    if before is None:
        return cores
    time.sleep(window_s)
    after, mine_after = _busy_and_total(), os.times()
    if after is None or after[1] <= before[1]:
        return cores
    machine = os.cpu_count() or cores
    busy = (after[0] - before[0]) / (after[1] - before[1]) * machine  # cores' worth busy, everyone
    own = (mine_after.user + mine_after.system - mine.user - mine.system) / window_s
    others = max(0.0, busy - own)
    return max(1, min(cores, round(cores - others)))
