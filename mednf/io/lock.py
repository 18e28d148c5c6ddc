"""One lock per dataset directory, shared by every writer of it (build, download, import).

The lock is ``fcntl.flock`` on ``<parent>/.<name>.lock``, a file *beside* the dataset directory, so that a
download may replace the directory itself while holding it. The OS releases a flock when its process
dies (even on SIGKILL), so a stale lock file never blocks anyone: only a live holder does. The file holds
one line, ``<role> <pid>``, written by the holder, so that a refused writer can say who holds it.

Roles: ``build`` (long; others refuse at once rather than wait hours), ``download`` and ``import``
(a second download of the same name waits for the first, then reuses its result), ``export`` (on an
export's ``--out``: a second export into the same folder is refused at once) and ``remove`` (``mednf cache rm``).
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

from mednf.errors import BuildError, LockedError

_UNNAMED_TRIES = 50  # a holder writes its line right after it takes the lock: 0.5 s is ample to see it


def lock_path(target: Path) -> Path:
    """Where the lock of dataset directory ``target`` lives: ``<parent>/.<name>.lock`` of the resolved path,
    so every spelling of one folder (relative, ``~``, through a symlink) shares one lock."""
    target = Path(target).expanduser().resolve()
    return target.parent / f".{target.name}.lock"


def _holder(handle: TextIO) -> tuple[str, str]:
    handle.seek(0)
    role, _, pid = handle.read().strip().partition(" ")
    return role or "?", pid or "?"


@contextmanager
def dataset_lock(target: Path, role: str, *, wait: bool = False, poll_s: float = 0.2,
                 on_wait: Callable[[str, str, Path], None] | None = None) -> Iterator[None]:
    """Hold the lock of ``target`` for the ``with`` block.

    ``wait=False``: raise :class:`LockedError` at once if a live process holds it. ``wait=True``: block
    until it is free, calling ``on_wait(role, pid, target)`` once first (default: one line on stderr).
    """
    path = lock_path(target)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = _open_lock_file(path)
    try:
        announced, unnamed = False, 0
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                other_role, pid = _holder(handle)
                if other_role == "?" and unnamed < _UNNAMED_TRIES:  # taken a moment ago: its line is not written yet
                    unnamed += 1
                    time.sleep(0.01)
                    continue
                if not wait:
                    raise LockedError(f"{target} is being written by another process ({other_role}, pid {pid}); "
                                      f"wait for it to finish, or use another folder", other_role, pid) from None
                if not announced:
                    (on_wait or _say_waiting)(other_role, pid, target)
                    announced = True
                time.sleep(poll_s)
        handle.seek(0)
        handle.truncate()
        handle.write(f"{role} {os.getpid()}\n")
        handle.flush()
        try:
            yield
        finally:
            handle.seek(0)
            handle.truncate()
            handle.flush()
            fcntl.flock(handle, fcntl.LOCK_UN)
    finally:
        handle.close()


def _open_lock_file(path: Path) -> TextIO:
    """The lock file, opened for reading and writing (created if absent). A symbolic link or anything but a
    regular file at its place is refused: writing ``<role> <pid>`` through a planted link would overwrite the
    file it points to."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)
    except OSError as err:
        if err.errno != errno.ELOOP:
            raise
        raise BuildError(f"{path} is a symbolic link where mednf keeps the lock of {path.parent}/"
                         f"{path.name[1:-len('.lock')]}: mednf never writes through a link; remove it") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise BuildError(f"{path} is not a regular file where mednf keeps a dataset's lock; remove it")
    return os.fdopen(fd, "r+")


def _say_waiting(role: str, pid: str, target: Path) -> None:
    print(f"waiting for {role} (pid {pid}) to finish writing {target} ...", file=sys.stderr, flush=True)
