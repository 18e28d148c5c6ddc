"""Files that are either absent or whole: atomic writes, temporary names, digests.

Every small file mednf writes whole (manifest, card, θ, index, records) goes to a temporary name beside
its target (``.<name>.<pid>.tmp``), is flushed and fsynced, then renamed over the target: a reader sees
the old file or the new one, never half of one. Latent chunks are written by zarr (its own temporary
name + rename, not fsynced); the manifest, written last after every chunk was read back, is what makes
a dataset complete.
A process killed mid-write leaves its temporary file behind; :func:`remove_temporaries` deletes those
of a directory once its writer holds the directory's lock (so no live writer can own them). Only names of
that exact scheme are temporaries: a user's ``.notes.tmp`` is not one.

**mednf marks what it creates.** A scratch folder (a download's, an export's, a continuation's staging, a
removal's) is made by :func:`make_scratch`, which writes ``.mednf-scratch`` (the creating pid) in it at once;
a sweep (:func:`sweep_dead_scratch`) deletes only folders carrying that mark whose process is dead, never
a folder because of its name. An output folder that mednf creates or claims (a build, a Zenodo export) holds
``.mednf-owner`` (:func:`write_owner_mark`: what it is and of which dataset), and a folder that holds files
is mednf's only when it carries that mark (:mod:`mednf.format.layout`).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import stat
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from mednf.errors import BuildError

_BLOCK = 1 << 20
# mednf's own: ``.<name>.<pid>.tmp`` (temporary_name) and ``.<name>.<pid>.part`` (an HTTP transfer)
_OUR_TEMP = re.compile(r"\..+\.[0-9]+\.(tmp|part)")
# zarr 3 writes a chunk to ``<chunk>.<uuid4 hex>.partial`` and renames it (no leading dot)
_ZARR_TEMP = re.compile(r".*\.[0-9a-f]{32}\.partial")
SCRATCH_MARK = ".mednf-scratch"  # in every scratch folder mednf makes: {"pid": <its creator>}
OWNER_MARK = ".mednf-owner"  # in every output folder mednf makes or claims: {"kind": ..., "name": ...}
_MARK_BYTES = 4096  # a mark is a few bytes: anything larger is not one of mednf's


def is_temporary(path: Path) -> bool:
    """A file a writer was still writing when it was killed: mednf's (``.<name>.<pid>.tmp`` or ``.part``) or
    zarr's. A name that merely ends in ``.tmp`` (``.notes.tmp``) is not one: it may be a user's."""
    name = path.name
    return bool(_OUR_TEMP.fullmatch(name) or _ZARR_TEMP.fullmatch(name))


def temporary_name(path: Path) -> Path:
    """The temporary name of ``path`` for this process: ``.<name>.<pid>.tmp`` in the same folder."""
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def create_new(path: Path) -> int:
    """A file descriptor of a new file at ``path``, opened for writing; a link or anything else already there is
    an error (``FileExistsError``), never followed: what mednf creates lands where it says, not where a planted
    link points."""
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)


def open_append(path: Path) -> int:
    """A file descriptor appending to ``path`` (created if absent); a symbolic link there is never followed: the
    open fails with ``ELOOP`` instead, so a planted link cannot make mednf append to the file it points to."""
    return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file, fsync, rename."""
    tmp = temporary_name(path)
    tmp.unlink(missing_ok=True)  # left by a killed process that had this pid (or planted): unlink never follows
    try:
        with os.fdopen(create_new(tmp), "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        if err.filename is None:  # a failed write or fsync (a full disk) names no file: name the one being written
            err.filename = str(path)
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    """``obj`` as indented UTF-8 JSON, atomically (key order as given: callers keep it stable)."""
    atomic_write_bytes(path, (json.dumps(obj, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))


def remove_temporaries(folder: Path) -> list[Path]:
    """Delete the temporary files (:func:`is_temporary`) anywhere under ``folder``; returns them.

    Only call this while holding the folder's lock (:mod:`mednf.io.lock`): then every such file belongs
    to a process that died before renaming it.
    """
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    for path in folder.rglob("*"):
        if path.is_file() and is_temporary(path):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


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
    except (OverflowError, ValueError):
        return False  # no such pid can exist
    return True


def read_mark(folder: Path, mark: str) -> dict[str, Any] | None:
    """The JSON object of the mark file ``mark`` in ``folder``, or None when there is none that mednf wrote:
    absent, a link (never followed), not a regular file, too large, or not a JSON object."""
    try:
        fd = os.open(folder / mark, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        data = os.read(fd, _MARK_BYTES + 1)
    except OSError:
        return None
    finally:
        os.close(fd)
    try:
        value = json.loads(data) if len(data) <= _MARK_BYTES else None
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def _real_folder(path: Path) -> bool:
    return path.is_dir() and not path.is_symlink()


def scratch_pid(folder: Path) -> int | None:
    """The pid of the process that made the scratch folder ``folder`` (:func:`make_scratch`), or None if
    ``folder`` is not a scratch folder mednf made (no mark, a link, anything else)."""
    if not _real_folder(folder):
        return None
    mark = read_mark(folder, SCRATCH_MARK)
    pid = mark.get("pid") if mark else None
    return pid if isinstance(pid, int) and not isinstance(pid, bool) and pid > 0 else None


def make_scratch(parent: Path, name: str) -> Path:
    """A new scratch folder ``parent/name``, marked as mednf's at once (``.mednf-scratch`` with this pid), so
    that it, and only it, may be swept when this process is gone. A marked scratch folder already there (left
    by a dead process that had this pid) is replaced; anything else there (a user's folder, a link) is a
    one-line BuildError, never removed or written through."""
    path = Path(parent) / name
    if scratch_pid(path) is not None:
        shutil.rmtree(path)
    try:
        path.mkdir(parents=True)
    except FileExistsError:
        raise BuildError(f"{path} is in the way and is not a folder mednf made (no {SCRATCH_MARK} in it): mednf "
                         "never writes into or removes it; move it away and run the command again") from None
    with os.fdopen(create_new(path / SCRATCH_MARK), "w", encoding="utf-8") as fh:
        fh.write(json.dumps({"pid": os.getpid()}) + "\n")
    return path


def discard_scratch(path: Path) -> bool:
    """Remove ``path`` if it is a scratch folder mednf made (any creator: call it when no live process can own
    it, e.g. holding the lock it belongs to); anything else is left as it is. True if removed."""
    if scratch_pid(path) is None:
        return False
    shutil.rmtree(path, ignore_errors=True)
    return True


def sweep_dead_scratch(folders: Iterable[Path]) -> list[Path]:
    """Remove those of ``folders`` that are scratch folders mednf made (:func:`make_scratch`) whose process is
    dead; returns them. A folder without the mark, or a live process's, is never touched, whatever its name."""
    removed = []
    for path in folders:
        pid = scratch_pid(path)
        if pid is not None and not pid_alive(pid):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def owner_mark(folder: Path) -> tuple[str, str] | None:
    """``(kind, dataset name)`` of the output folder ``folder`` as mednf marked it (:func:`write_owner_mark`), or
    None when it carries no such mark."""
    if not _real_folder(folder):
        return None
    mark = read_mark(folder, OWNER_MARK)
    kind, name = (mark.get("kind"), mark.get("name")) if mark else (None, None)
    return (kind, name) if isinstance(kind, str) and isinstance(name, str) else None


def write_owner_mark(folder: Path, kind: str, name: str) -> None:
    """Mark ``folder`` as the ``kind`` output (``build``, ``zenodo-export``) of the dataset ``name`` (written
    atomically, never through a link). Only for a folder mednf made or claimed while it was empty."""
    atomic_write_json(folder / OWNER_MARK, {"kind": kind, "name": name})


def file_digest(path: Path, algorithm: str = "sha256") -> str:
    """Hex digest of a file's bytes (``sha256`` or ``md5``), read in 1 MiB blocks."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as fh:
        while block := fh.read(_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    return file_digest(path, "sha256")
