"""``build.log`` and the console: every message of a build goes through :func:`say`."""

from __future__ import annotations

import errno
import logging
import os
import sys
from pathlib import Path
from typing import TextIO

from tqdm.auto import tqdm

from mednf.building.distributed import Dist
from mednf.errors import BuildError
from mednf.format.layout import LOG
from mednf.io.files import open_append

log = logging.getLogger("mednf.building")


def say(message: str, dist: Dist) -> None:
    """Log to build.log and, on rank 0, to the console (above any progress bar)."""
    log.info(message)
    if dist.is_main:
        tqdm.write(message, file=sys.stderr)


class _LogFile(logging.StreamHandler[TextIO]):
    """A handler writing to a file mednf opened itself (never through a link); closing it closes the file."""

    def close(self) -> None:
        try:
            self.stream.close()
        finally:
            super().close()


def start_log(folder: Path, dist: Dist) -> logging.Handler | None:
    """Append every message from now on to ``folder``/build.log (rank 0; the others only log)."""
    log.setLevel(logging.INFO)
    if not dist.is_main:
        return None
    path = folder / LOG
    try:
        fd = open_append(path)
    except OSError as err:
        if err.errno != errno.ELOOP:
            raise
        raise BuildError(f"{path} is a symbolic link: mednf appends its log only to a real file; remove the link "
                         "and run the build again") from None
    handler = _LogFile(os.fdopen(fd, "a", encoding="utf-8"))
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    log.addHandler(handler)
    return handler


def stop_log(handler: logging.Handler | None) -> None:
    """Close what :func:`start_log` opened."""
    if handler is not None:
        log.removeHandler(handler)
        handler.close()
