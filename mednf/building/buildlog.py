"""``build.log`` and the console: every message of a build goes through :func:`say`."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from tqdm.auto import tqdm

from mednf.building.distributed import Dist
from mednf.format.layout import LOG

log = logging.getLogger("mednf.building")


def say(message: str, dist: Dist) -> None:
    """Log to build.log and, on rank 0, to the console (above any progress bar)."""
    log.info(message)
    if dist.is_main:
        tqdm.write(message, file=sys.stderr)


def start_log(folder: Path, dist: Dist) -> logging.Handler | None:
    """Append every message from now on to ``folder``/build.log (rank 0; the others only log)."""
    log.setLevel(logging.INFO)
    if not dist.is_main:
        return None
    handler = logging.FileHandler(folder / LOG, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    log.addHandler(handler)
    return handler


def stop_log(handler: logging.Handler | None) -> None:
    """Close what :func:`start_log` opened."""
    if handler is not None:
        log.removeHandler(handler)
        handler.close()
