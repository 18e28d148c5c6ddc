"""The frame around a build in a folder, the same for a build and a continuation: the ranks' process group,
the folder's lock and the build log, set up in that order and torn down whatever happens inside."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from mednf.building.buildlog import start_log, stop_log
from mednf.building.distributed import Dist, setup
from mednf.errors import BuildError, LockedError
from mednf.io.lock import dataset_lock


@dataclass
class BuildFrame:
    """What a locked build holds: the process group and, once :meth:`log_into` chose its folder, the log."""

    dist: Dist
    handler: logging.Handler | None = None

    def log_into(self, folder: Path) -> None:
        """From now on every message also goes to ``folder``/build.log (rank 0)."""
        self.handler = start_log(folder, self.dist)


@contextmanager
def build_frame(out: Path, device: torch.device) -> Iterator[BuildFrame]:
    """Join the torchrun group (if any), take the dataset lock of ``out`` and yield the frame; on the way
    out the lock is released, the log closed and the group left."""
    frame = BuildFrame(setup(device))
    try:
        with _directory_lock(out, frame.dist):
            yield frame
    finally:
        stop_log(frame.handler)
        frame.dist.close()


@contextmanager
def _directory_lock(out: Path, dist: Dist) -> Iterator[None]:
    """The dataset lock of ``out`` (:mod:`mednf.io.lock`) for the whole build: rank 0 holds it, every rank
    learns the outcome."""
    with ExitStack() as stack:
        error = ""
        if dist.is_main:
            try:
                stack.enter_context(dataset_lock(out, "build"))
            except LockedError as err:
                error = str(err)
        if not dist.agree(not error):
            raise BuildError(error or f"{out} is locked by another process (see rank 0)")
        yield
