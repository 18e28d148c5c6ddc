"""What is in the dataset cache (``$MEDNF_HOME`` or ``--root``), and removing one dataset from it.

:func:`cache_entries` lists every folder in the cache with its size on disk and where it stands (complete:
built, downloaded or imported; an unfinished build; damaged; or not mednf's), plus mednf's own bookkeeping
(``.remote``: files kept by ``MEDNF_REMOTE_CACHE=disk``; ``.verified``: remembered checksums).

:func:`remove_dataset` deletes one dataset under the same lock a build or download takes, so a running
build is never removed (``--force`` does not change that). An unfinished build — hours of meta-training
that a rerun resumes — is kept unless ``force`` is given, and so is a damaged folder (a ``mednf.json`` that
does not read: mednf cannot tell whose files sit beside it); a folder that is not mednf's (no manifest, no
build state) is never deleted. The folder is first moved into a marked scratch folder of mednf's and then
deleted, so an interrupted removal never leaves a half-deleted folder under the dataset's name.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from mednf.errors import BuildError, NotFoundError, match_name
from mednf.format.layout import CONTINUE, LOG, MANIFEST, WORK, earlier_build, mednf_home
from mednf.format.manifest import Manifest
from mednf.io.files import OWNER_MARK, is_temporary, make_scratch, owner_mark, sweep_dead_scratch
from mednf.io.lock import dataset_lock
from mednf.remote.catalogue import availability

BOOKKEEPING = {".remote": "verified files of remote reads (MEDNF_REMOTE_CACHE=disk)",
               ".verified": "remembered checksums of verified datasets",
               ".unpacked": "uncompressed latents of local datasets, memory-mapped (re-created on demand)"}


@dataclass(frozen=True)
class CacheEntry:
    """One folder of the cache: ``state`` is built / downloaded / imported / unfinished / damaged / foreign
    (not mednf's) / bookkeeping."""

    name: str
    path: Path
    state: str
    size_bytes: int

    @property
    def complete(self) -> bool:
        """A finished dataset (built, downloaded or imported)."""
        return self.state in ("built", "downloaded", "imported")


def folder_size(path: Path) -> int:
    """Bytes of the files under ``path`` (links not followed, each counted as its own size)."""
    total = 0
    for folder, _, files in os.walk(path, followlinks=False):
        for name in files:
            try:
                total += os.lstat(os.path.join(folder, name)).st_size
            except OSError:
                pass  # removed while walking
    return total


def _home(root: str | Path | None) -> Path:
    return Path(root).expanduser() if root else mednf_home()


def cache_entries(root: str | Path | None = None) -> list[CacheEntry]:
    """Every folder in the cache ``root`` (default ``$MEDNF_HOME``), datasets first, by name."""
    home = _home(root)
    if not home.is_dir():
        return []
    entries = []
    for path in sorted(home.iterdir(), key=lambda p: p.name.lower()):
        if path.is_symlink() or not path.is_dir():
            continue  # lock files, a user's files: not folders of the cache
        if path.name in BOOKKEEPING:
            state = "bookkeeping" if _bookkeeping(path) else "foreign"
            entries.append(CacheEntry(path.name, path, state, folder_size(path)))
        elif not path.name.startswith("."):  # hidden: scratch folders of downloads and exports in progress
            where = availability(path.name, home)
            state = where.state if where.path is not None else "foreign"
            if state == "unfinished" and not _build_state(path):
                state = "foreign"  # an empty .partial/ does not make a folder mednf's
            entries.append(CacheEntry(path.name, path, state, folder_size(path)))
    return sorted(entries, key=lambda e: (e.name.startswith("."), e.name.lower()))  # mednf's own folders last


# the files mednf writes in each bookkeeping folder: .remote/<2 hex>/<sha256>, .verified/<key>.json,
# .unpacked/<key>/<split>.npy|.json|.lock, and the temporary files of those writes
_BOOKKEEPING_FILES = {
    ".remote": re.compile(r"[0-9a-f]{2}/(?:[0-9a-f]{64}|\.[0-9a-f]{64}\..+\.tmp)"),
    ".verified": re.compile(r"[^/]+\.json|\.[^/]+\.json\.[0-9]+\.tmp"),
    ".unpacked": re.compile(r"[0-9a-f]+/(?:\w+\.(?:npy|json)|\.\w+\.lock|\.\w+\.(?:npy|json)\.[0-9]+\.tmp)"),
}


def _bookkeeping(folder: Path) -> bool:
    """Whether ``folder`` holds only what mednf writes there (no link, no file of another name): only then is it
    listed as mednf's bookkeeping and removable."""
    pattern = _BOOKKEEPING_FILES[folder.name]
    for parent, dirs, files in os.walk(folder):
        for name in dirs + files:
            path = Path(parent) / name
            if path.is_symlink():
                return False
            if name in files and not pattern.fullmatch(path.relative_to(folder).as_posix()):
                return False
    return True


def _build_state(folder: Path) -> bool:
    """``folder`` is a build of mednf's: it carries mednf's build mark, or an earlier mednf's recorded build."""
    mark = owner_mark(folder)
    return (mark is not None and mark[0] == "build") or earlier_build(folder)


def remove_dataset(name: str, root: str | Path | None = None, *, force: bool = False) -> CacheEntry:
    """Delete the dataset ``name`` (case-insensitive) or a bookkeeping folder from the cache; returns what was
    removed. NotFoundError when absent; BuildError for an unfinished build without ``force``, a folder that is
    not mednf's, or a dataset whose lock a live process holds (a build, download or import running)."""
    entries = cache_entries(root)
    found = match_name(name, [e.name for e in entries], str(_home(root)))
    if found is None:
        names = ", ".join(e.name for e in entries) or "none"
        raise NotFoundError(f"{name!r} is not in the cache {_home(root)} (there: {names}); see `mednf cache list`")
    entry = next(e for e in entries if e.name == found)
    if entry.state == "foreign":
        raise BuildError(f"{entry.path} is not mednf's (no manifest, no build state of mednf's, or files mednf does "
                         "not write): mednf deletes only its own folders; remove it yourself if you mean to")
    if entry.state == "unfinished" and not force:
        raise BuildError(f"{entry.path} holds an unfinished build, which a rerun of `mednf build` resumes: add "
                         "--force to delete it anyway")
    if entry.state == "damaged" and not force:
        raise BuildError(f"{entry.path} holds a mednf.json that does not read{_beside(entry.path)}, so mednf cannot "
                         "tell whose files those are: add --force to delete the folder anyway")
    if entry.complete and not force:
        foreign = _not_listed(entry.path)
        if foreign:
            raise BuildError(f"{entry.path} holds {len(foreign)} file(s) its manifest does not list "
                             f"({', '.join(foreign[:5])}{', …' if len(foreign) > 5 else ''}), which are not mednf's: "
                             "move them out, or add --force to delete them with the dataset")
    if entry.state == "bookkeeping":
        _delete(entry.path)
        return entry
    with dataset_lock(entry.path, "remove"):
        _delete(entry.path)
    return entry


def _not_listed(folder: Path) -> list[str]:
    """The files in the complete dataset ``folder`` that are neither listed by its manifest nor mednf's own (its
    manifest, log, build state, mark, temporaries), hidden ones included: someone else's, sorted."""
    manifest = Manifest.read(folder)
    own = {MANIFEST, LOG, OWNER_MARK}
    found = []
    for parent, dirs, files in os.walk(folder):
        for name in files:
            rel = (Path(parent) / name).relative_to(folder)
            if (rel.as_posix() in manifest.files or rel.as_posix() in own or rel.parts[0] in (WORK, CONTINUE)
                    or is_temporary(Path(parent) / name)):
                continue
            found.append(rel.as_posix())
    return sorted(found)


def _beside(folder: Path) -> str:
    """``, beside <n> other entries (a, b, c, …)`` for the entries of ``folder`` other than its manifest."""
    others = sorted(p.name for p in folder.iterdir() if p.name != MANIFEST)
    if not others:
        return ""
    return f", beside {len(others)} other entr{'y' if len(others) == 1 else 'ies'} ({', '.join(others[:3])}" + (
        ", …)" if len(others) > 3 else ")")


def _delete(path: Path) -> None:
    """Move ``path`` into a scratch folder of mednf's beside it (``.<name>.removing-<pid>/``, marked: one rename,
    so an interrupted removal never leaves a half-deleted folder under the dataset's name), then delete that,
    and the removal folders of ``path`` that killed removals left (marked, their process dead; never a folder
    for its name alone)."""
    sweep_dead_scratch(path.parent.glob(f".{glob.escape(path.name)}.removing-*"))
    box = make_scratch(path.parent, f".{path.name}.removing-{os.getpid()}")
    try:
        os.rename(path, box / path.name)
    finally:
        shutil.rmtree(box)
