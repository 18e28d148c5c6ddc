"""Safe unpacking of downloaded zip and tar archives.

Checked before anything is written: no absolute paths, ``..``, links or devices; no pickle-based files in
a tar unless allowed; and the total size the archive *declares* must be at most :data:`MAX_EXPANSION`
times the archive's own size (or :data:`EXPANSION_FLOOR_BYTES`, whichever is larger) and must fit on the
disk with :data:`SPARE_BYTES` to spare. mednf's exports are uncompressed tars (≈1×), the official
release's zipped tensors ≈1.1×; a decompression bomb declares far more (zeros deflate ≈1000×).

While unpacking, mednf writes each member itself and never more bytes than the member declared (a longer
stream is an error, not a bigger file); a member shorter than declared means a truncated archive. A
damaged archive (garbage, truncated, empty, bad gzip/bz2/xz stream or checksum: a compressed tar is read
to its end) is one :class:`DownloadError`. On
error, ``into`` may hold part of the archive: callers unpack into a temporary folder and remove it.
"""

from __future__ import annotations

import lzma
import shutil
import stat
import tarfile
import zipfile
import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import IO

from mednf.errors import DownloadError

ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")
MAX_EXPANSION = 32  # declared content ≤ 32 × the archive's size ...
EXPANSION_FLOOR_BYTES = 64 << 20  # ... or ≤ 64 MiB, whichever is larger (small archives of small files)
SPARE_BYTES = 1 << 30  # free disk kept after unpacking
_CHUNK = 1 << 20
_PICKLE_SUFFIXES = (".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".joblib")
_UNREADABLE = (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, lzma.LZMAError, OSError, RuntimeError,
               NotImplementedError)  # reading a damaged archive (writing errors are reported apart)


def _unsafe_name(name: str) -> bool:
    """An archive member name that could land outside the target: absolute, drive-letter, or with ``..``."""
    posix = name.replace("\\", "/")
    return not name or posix.startswith("/") or ".." in Path(posix).parts or (len(name) > 1 and name[1] == ":")


def _reason(err: BaseException) -> str:
    """One line for a reading error (tarfile's "could not be opened" lists one line per method tried)."""
    text = str(err).strip()
    if text.startswith("file could not be opened successfully"):
        return "not a tar, tar.gz, tar.bz2 or tar.xz file"
    return (text.splitlines() or [type(err).__name__])[0]


def _check_sizes(archive: Path, sizes: Iterable[int], into: Path) -> None:
    """Refuse an archive whose declared contents exceed the expansion cap (a decompression bomb) or the disk."""
    declared, packed = sum(sizes), archive.stat().st_size
    cap = max(EXPANSION_FLOOR_BYTES, MAX_EXPANSION * packed)
    if declared > cap:
        raise DownloadError(f"{archive.name} declares {declared / 2**20:.1f} MiB of content in {packed / 2**20:.2f} "
                            f"MiB ({declared / max(packed, 1):.0f}×; at most {MAX_EXPANSION}× or "
                            f"{EXPANSION_FLOOR_BYTES >> 20} MiB are unpacked): a decompression bomb or a damaged "
                            "archive, refusing it before writing anything")
    into.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(into).free
    if declared > free - SPARE_BYTES:
        raise DownloadError(f"{archive.name} unpacks to {declared / 2**30:.1f} GiB, {into} has "
                            f"{free / 2**30:.1f} GiB free; free space (keep 1 GiB spare) or use another --root")


def _destination(into: Path, name: str, archive: Path) -> Path:
    dest = into / name.replace("\\", "/")
    if not dest.resolve().is_relative_to(into.resolve()):
        raise DownloadError(f"{archive.name} holds an unsafe entry {name!r} (outside the folder it unpacks to); "
                            "refusing to unpack it")
    return dest


def _write_member(src: IO[bytes], dest: Path, declared: int, archive: Path, name: str) -> None:
    """Copy one member to ``dest``: exactly the ``declared`` bytes, never more (read errors propagate)."""
    written = 0
    try:
        try:
            out = open(dest, "wb")  # noqa: SIM115 (closed by the with below)
        except OSError as err:
            raise DownloadError(f"could not write {dest} ({err.strerror or err}); free space, check permissions or "
                                "use another --root") from None
        with out:
            while block := src.read(min(_CHUNK, declared - written + 1)):
                written += len(block)
                if written > declared:
                    raise DownloadError(f"{archive.name}: {name!r} unpacks to more than the {declared} bytes it "
                                        "declares; refusing the archive (damaged or crafted)")
                try:
                    out.write(block)
                except OSError as err:
                    raise DownloadError(f"could not write {dest} ({err.strerror or err}); free space or use "
                                        "another --root") from None
        if written < declared:
            raise DownloadError(f"{archive.name} is truncated: {name!r} holds {written} of the {declared} bytes "
                                "it declares; nothing was kept, run the download again")
    except BaseException:
        dest.unlink(missing_ok=True)
        raise


def safe_extract_zip(archive: Path, into: Path) -> None:
    """Unpack a zip, refusing absolute paths, ``..``, symbolic links and bombs (before writing anything)."""
    try:
        with zipfile.ZipFile(archive) as zf:
            infos = zf.infolist()
            for info in infos:
                if _unsafe_name(info.filename) or stat.S_ISLNK(info.external_attr >> 16):
                    raise DownloadError(f"{archive.name} holds an unsafe entry {info.filename!r} (absolute path, "
                                        "'..' or link); refusing to unpack it")
            _check_sizes(archive, (info.file_size for info in infos), into)
            for info in infos:
                dest = _destination(into, info.filename, archive)
                if info.is_dir():
                    dest.mkdir(parents=True, exist_ok=True)
                    continue
                dest.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src:
                    _write_member(src, dest, info.file_size, archive, info.filename)
    except _UNREADABLE as err:
        raise DownloadError(f"{archive.name} is not a readable zip ({_reason(err)}); unpack it with another "
                            "tool and run `mednf import-official`") from None


def safe_extract(archive: Path, into: Path, *, allow_torch_files: bool = False) -> None:
    """Unpack a tar (plain, gz, bz2 or xz), refusing absolute paths, ``..``, links, special files and bombs
    (before writing anything).

    Pickle-based files are refused too, unless ``allow_torch_files`` (the official release's ``.pt`` files,
    which :mod:`mednf.remote.official` reads weights-only and allow-listed, never with ``pickle``)."""
    try:
        if archive.stat().st_size == 0:
            raise tarfile.ReadError("an empty file")
        with tarfile.open(archive, "r:*") as tar:
            members = tar.getmembers()
            for member in members:
                if _unsafe_name(member.name) or not (member.isfile() or member.isdir()):
                    raise DownloadError(f"{archive.name} holds an unsafe entry {member.name!r} (absolute path, '..', "
                                        "link or device); refusing to unpack it")
                if member.name.lower().endswith(_PICKLE_SUFFIXES) and not (
                        allow_torch_files and member.name.endswith(".pt")):
                    raise DownloadError(f"{archive.name} holds {member.name!r}, a pickle-based file; mednf's format "
                                        "has no pickle and never unpickles a download, refusing the archive")
            _check_sizes(archive, (m.size for m in members if m.isfile()), into)
            for member in members:
                dest = _destination(into, member.name, archive)
                if member.isdir():
                    dest.mkdir(parents=True, exist_ok=True)
                    continue
                dest.parent.mkdir(parents=True, exist_ok=True)
                source = tar.extractfile(member)
                if source is None:  # not a regular file (refused above; here for the type checker)
                    raise DownloadError(f"{archive.name} holds {member.name!r}, which is not a regular file")
                with source as src:
                    _write_member(src, dest, member.size, archive, member.name)
            while tar.fileobj.read(_CHUNK):  # to the end of a compressed stream: its checksum (gzip CRC) is checked
                pass
    except _UNREADABLE as err:
        raise DownloadError(f"{archive.name} is not a readable tar archive ({_reason(err)}): damaged, truncated "
                            "or not a tar; nothing was kept, run the download again") from None
