"""Files that are either absent or whole: atomic writes, temporary names, digests.

Every small file mednf writes whole (manifest, card, θ, index, records) goes to a temporary name beside
its target (``.<name>.<pid>.tmp``), is flushed and fsynced, then renamed over the target: a reader sees
the old file or the new one, never half of one. Latent chunks are written by zarr (its own temporary
name + rename, not fsynced); the manifest, written last after every chunk was read back, is what makes
a dataset complete.
A process killed mid-write leaves its temporary file behind; :func:`remove_temporaries` deletes those
of a directory once its writer holds the directory's lock (so no live writer can own them).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

TEMP_SUFFIXES = (".tmp", ".part")
_BLOCK = 1 << 20
# zarr 3 writes a chunk to ``<chunk>.<uuid4 hex>.partial`` and renames it (no leading dot)
_ZARR_TEMP = re.compile(r".*\.[0-9a-f]{32}\.partial")


def is_temporary(path: Path) -> bool:
    """A file a writer was still writing when it was killed: ours (``.<name>.<pid>.tmp``, ``.part``) or zarr's."""
    name = path.name
    return (name.startswith(".") and name.endswith(TEMP_SUFFIXES)) or bool(_ZARR_TEMP.fullmatch(name))


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
