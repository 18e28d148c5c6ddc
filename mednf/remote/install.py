"""The one way a download lands in the cache: :func:`install` (Zenodo exports, the official release, HF).

1. It takes the dataset's lock (:mod:`mednf.io.lock`) as ``download``, without waiting. A **build**
   holding it refuses the download at once (a build takes hours, and its ``.partial/`` is never touched);
   another **download or import** holding it is waited for (polling, so that a build taking the lock in
   between is refused rather than waited for).
2. If ``target`` now holds a complete, verified dataset (the other download's result), it is returned as
   it is: nothing is transferred twice. A damaged copy is downloaded again.
3. A ``target`` holding an unfinished build (``.partial/``) is refused, never deleted; so is one holding
   files that are not a mednf dataset.
4. Folders left by dead processes (``<home>/.<Name>.<stage>-<pid>/`` and ``<home>/.downloads/<Name>-<pid>/``
   whose pid is not alive, their ``.part`` files included) are removed. Then ``produce(tmp)`` writes a
   complete dataset to ``tmp = <home>/.<Name>.download-<pid>/<Name>`` (absent when called; ``tmp.parent``
   is its private scratch space for unpacking, :func:`fetch_folder` the one for fetched files). ``tmp`` is
   verified (sha256 of every file) and only then replaces ``target``, by one rename. Both scratch folders
   are removed whatever happens.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

from mednf.errors import DownloadError, MednfError
from mednf.format.layout import CONTINUE, LOG, MANIFEST
from mednf.format.manifest import Manifest
from mednf.format.reader import mark_verified, verify_dataset
from mednf.io.lock import LockedError, dataset_lock
from mednf.remote.registry import check_target

POLL_S = 0.2
_SCRATCH = re.compile(r"\.(?P<name>.+)\.[a-z]+-(?P<pid>\d+)")
_FETCHED = re.compile(r"(?P<name>.+)-(?P<pid>\d+)")


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists on this machine (ours counts as alive)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


def fetch_folder(target: Path) -> Path:
    """Where this process keeps the files it fetches for ``target`` (archives, snapshots):
    ``<home>/.downloads/<Name>-<pid>/``, removed by :func:`install` when it is done."""
    target = Path(target).expanduser().absolute()
    return target.parent / ".downloads" / f"{target.name}-{os.getpid()}"


def install(target: Path, produce: Callable[[Path], None], *, what: str) -> Path:
    """Put the dataset that ``produce(tmp)`` writes to ``tmp`` at ``target``, verified, under the dataset
    lock; returns ``target``. ``what`` names the download in messages (e.g. ``"PhantomNF (Zenodo record 1)"``).
    See the module docstring for the steps."""
    target = Path(target).expanduser().absolute()
    with ExitStack() as stack:
        _lock(target, what, stack)
        if _complete(target):
            return target
        check_target(target)
        _check_replaceable(target)
        remove_dead_scratch(target)
        scratch = target.parent / f".{target.name}.download-{os.getpid()}"
        for folder in (scratch, fetch_folder(target)):
            shutil.rmtree(folder, ignore_errors=True)  # we hold the lock: no live owner
        scratch.mkdir(parents=True)
        try:
            tmp = scratch / target.name
            produce(tmp)
            verify_dataset(tmp, checksums=True, use_cache=False)
            if target.exists():
                shutil.rmtree(target)  # an incomplete earlier copy (checked above: no build, only mednf files)
            os.replace(tmp, target)
            mark_verified(target)  # just hashed as tmp: the first load need not hash it again
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
            shutil.rmtree(fetch_folder(target), ignore_errors=True)
    return target


def _lock(target: Path, what: str, stack: ExitStack) -> None:
    announced = False
    while True:
        try:
            stack.enter_context(dataset_lock(target, "download"))
            return
        except LockedError as err:
            if err.role == "build":
                raise DownloadError(f"{target} is being built by pid {err.pid}; wait for the build or download "
                                    f"{what} into another --root") from None
            if not announced:
                print(f"waiting for the {err.role} of {target.name} by pid {err.pid} to finish ...", file=sys.stderr,
                      flush=True)
                announced = True
            time.sleep(POLL_S)


def _complete(target: Path) -> bool:
    """A complete, verified copy (sha256 of every file, remembered while unchanged): a damaged one is not
    reused but downloaded again."""
    if not (target / MANIFEST).is_file():
        return False
    try:
        verify_dataset(target, checksums=True)
    except MednfError:
        return False
    return True


def _check_replaceable(target: Path) -> None:
    """Only mednf's own files are replaced: those an (incomplete or damaged) copy's manifest lists, the
    manifest, a failed build's log, a finished build's checkpoints. Anything else in the folder is the user's: refused,
    never deleted."""
    if target.is_symlink() or (target.exists() and not target.is_dir()):
        raise DownloadError(f"{target} exists and is not a folder; move it away or download into another --root")
    if not target.is_dir():
        return
    ours = {MANIFEST, LOG}
    try:
        ours |= set(Manifest.read(target).files)
    except MednfError:
        pass  # no readable manifest: only the log is ours
    foreign = sorted(rel for p in target.rglob("*") if p.is_file() or p.is_symlink()
                     if (rel := p.relative_to(target).as_posix()) not in ours
                     and not rel.startswith(f"{CONTINUE}/"))  # a finished build's checkpoints (--continue-to)
    if foreign:
        raise DownloadError(f"{target} holds files that are not a mednf dataset ({', '.join(foreign[:3])}); "
                            "move them away or download into another --root")


def remove_dead_scratch(target: Path) -> list[Path]:
    """Remove the ``<home>/.<Name>.<stage>-<pid>/`` and ``<home>/.downloads/<Name>-<pid>/`` folders of
    ``target`` whose process is dead (call it while holding the dataset lock); returns them."""
    name, removed = glob.escape(target.name), []
    for path, pattern in [*((p, _SCRATCH) for p in target.parent.glob(f".{name}.*-*")),
                          *((p, _FETCHED) for p in (target.parent / ".downloads").glob(f"{name}-*"))]:
        match = pattern.fullmatch(path.name)
        if (match and match["name"] == target.name and path.is_dir() and not path.is_symlink()
                and not pid_alive(int(match["pid"]))):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed
