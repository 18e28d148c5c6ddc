"""How many CPU threads a command should use: the cores other processes leave free.

torch's CPU kernels run on an OpenMP thread pool (libgomp in the Linux wheels), one thread per core by default.
At every parallel region each thread waits for the others; beside another CPU-bound process one of them is
often descheduled, and the rest spin (libgomp: 300,000 spins) or sleep until it runs again: the README's
first build took 61 minutes instead of 4 beside one other job. :func:`free_cores` samples ``/proc/stat`` for
0.1 s and counts the cores the rest of the machine leaves free (at least one); the computing commands take
that many threads unless ``--threads`` or ``$OMP_NUM_THREADS`` says otherwise (:mod:`mednf.cli.options`).
On an idle machine that is every core, so nothing changes there.

Measured against the alternatives (``benchmarks/under_load.py``, ``benchmarks/RESULTS.md`` "Under load"):
``OMP_WAIT_POLICY=PASSIVE`` halves the fit's speed on an idle machine, and a bounded spin
(``GOMP_SPINCOUNT`` 1,000 or 10,000) costs 17–28 % idle and helps less under load than one thread fewer; so
mednf sets neither. Load that starts after a command began is not followed: a build keeps its thread count
for its whole life, resumes included (another count changes the last bits of the result).
"""

from __future__ import annotations

import os
import time


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
