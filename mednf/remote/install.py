"""The one way a download lands in the cache: :func:`install` (Zenodo exports, the official release, HF).

1. It takes the dataset's lock (:mod:`mednf.io.lock`) as ``download``, without waiting. A **build**
   holding it refuses the download at once (a build takes hours, and its ``.partial/`` is never touched);
   another **download or import** holding it is waited for (polling, so that a build taking the lock in
   between is refused rather than waited for).
2. If ``target`` now holds a complete, verified dataset (the other download's result), it is returned as
   it is: nothing is transferred twice. A damaged copy is downloaded again.
3. A ``target`` holding an unfinished build (``.partial/``) is refused, never deleted; so is one holding
   files that are not a mednf dataset, and a ``<home>`` that is (or is inside) a dataset folder.
4. Scratch folders of ``<Name>`` left by dead processes (``<home>/.<Name>.<stage>-<pid>/`` and
   ``<home>/.downloads/<Name>-<pid>/``, their ``.part`` files included) are removed: only those that carry
   mednf's scratch mark (:func:`mednf.io.files.make_scratch`) with a pid that is not alive, never a folder
   for its name. Then ``produce(tmp)`` writes a complete dataset to ``tmp = <home>/.<Name>.download-<pid>/<Name>``
   (absent when called; ``tmp.parent`` is its private scratch space for unpacking, :func:`fetch_folder` the
   one for fetched files; both made and marked here). ``tmp`` is verified (sha256 of every file) and only then
   replaces ``target``, by one rename. Both scratch folders are removed whatever happens.
"""

from __future__ import annotations

import glob
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from mednf.errors import DownloadError, MednfError
from mednf.format.layout import CONTINUE, LOG, MANIFEST, check_outside_datasets
from mednf.format.manifest import Manifest
from mednf.format.reader import mark_verified, verify_dataset
from mednf.io.files import OWNER_MARK, make_scratch, pid_alive, sweep_dead_scratch
from mednf.io.lock import LockedError, dataset_lock
from mednf.remote.registry import check_target

__all__ = ["fetch_folder", "install", "pid_alive", "remove_dead_scratch"]
POLL_S = 0.2
DOWNLOADS = ".downloads"  # <home>/.downloads/<Name>-<pid>/: what one download fetched


def fetch_folder(target: Path) -> Path:
    """Where this process keeps the files it fetches for ``target`` (archives, snapshots):
    ``<home>/.downloads/<Name>-<pid>/``, removed by :func:`install` when it is done."""
    target = Path(target).expanduser().absolute()
    return target.parent / DOWNLOADS / f"{target.name}-{os.getpid()}"


def install(target: Path, produce: Callable[[Path], None], *, what: str) -> Path:
    """Put the dataset that ``produce(tmp)`` writes to ``tmp`` at ``target``, verified, under the dataset
    lock; returns ``target``. ``what`` names the download in messages (e.g. ``"PhantomNF (Zenodo record 1)"``).
    See the module docstring for the steps."""
    target = Path(target).expanduser().absolute()
    check_outside_datasets(target.parent, "--root")  # the dataset would be a stray folder in another one
    with ExitStack() as stack:
        _lock(target, what, stack)
        if _complete(target):
            return target
        check_target(target)
        _check_replaceable(target)
        remove_dead_scratch(target)
        downloads = target.parent / DOWNLOADS
        if downloads.is_symlink() or (downloads.exists() and not downloads.is_dir()):
            raise DownloadError(f"{downloads} is not a folder of mednf's (a link or a file), where a download keeps "
                                "what it fetches; move it away")
        for folder in (target.parent / f".{target.name}.download-{os.getpid()}", fetch_folder(target)):
            stack.enter_context(_scratch(folder))
        tmp = target.parent / f".{target.name}.download-{os.getpid()}" / target.name
        produce(tmp)
        verify_dataset(tmp, checksums=True, use_cache=False)
        if target.exists():
            shutil.rmtree(target)  # an incomplete earlier copy (checked above: no build, only mednf files)
        os.replace(tmp, target)
        mark_verified(target)  # just hashed as tmp: the first load need not hash it again
    return target


@contextmanager
def _scratch(path: Path) -> Iterator[Path]:
    """A scratch folder made (and marked) at ``path`` for the ``with`` block, removed after it whatever happens;
    something else in its place is a one-line error and is left as it is."""
    made = make_scratch(path.parent, path.name)
    try:
        yield made
    finally:
        shutil.rmtree(made, ignore_errors=True)


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
    ours = {MANIFEST, LOG, OWNER_MARK}
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
    """Remove the scratch folders of ``target`` left by dead processes: ``<home>/.<Name>.<stage>-<pid>/`` (a
    download's, an import's, an export's, a removal's) and ``<home>/.downloads/<Name>-<pid>/``, each only if it
    carries mednf's scratch mark with a pid that is not alive (:func:`mednf.io.files.sweep_dead_scratch`); a
    folder of that name without the mark is never touched. Call it holding the dataset lock; returns them."""
    name = glob.escape(target.name)
    return sweep_dead_scratch([*target.parent.glob(f".{name}.*-*"), *(target.parent / DOWNLOADS).glob(f"{name}-*")])
