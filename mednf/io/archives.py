"""Safe unpacking of downloaded zip and tar archives: no absolute paths, ``..``, links or devices, no
pickle-based files unless allowed, and a bound on the unpacked size, all checked before anything is written.
"""

from __future__ import annotations

import shutil
import tarfile
from pathlib import Path

from mednf.errors import DownloadError

_PICKLE_SUFFIXES = (".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".joblib")


def _unsafe_name(name: str) -> bool:
    """An archive member name that could land outside the target: absolute, drive-letter, or with ``..``."""
    posix = name.replace("\\", "/")
    return not name or posix.startswith("/") or ".." in Path(posix).parts or (len(name) > 1 and name[1] == ":")


def _check_space(archive: Path, unpacked_bytes: int, into: Path) -> None:
    """Refuse an archive whose declared contents would not fit on the disk (or a decompression bomb)."""
    into.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(into).free
    if unpacked_bytes > free - (1 << 30):
        raise DownloadError(f"{archive.name} unpacks to {unpacked_bytes / 2**30:.1f} GiB, {into} has "
                            f"{free / 2**30:.1f} GiB free; free space (keep 1 GiB spare) or use another --root")


def safe_extract_zip(archive: Path, into: Path) -> None:
    """Unpack a zip, refusing absolute paths, ``..`` and symbolic links (before writing anything)."""
    import stat
    import zipfile

    try:
        with zipfile.ZipFile(archive) as zf:
            infos = zf.infolist()
            for info in infos:
                if _unsafe_name(info.filename) or stat.S_ISLNK(info.external_attr >> 16):
                    raise DownloadError(f"{archive.name} holds an unsafe entry {info.filename!r} (absolute path, "
                                        "'..' or link); refusing to unpack it")
            _check_space(archive, sum(info.file_size for info in infos), into)
            zf.extractall(into)
    except (zipfile.BadZipFile, NotImplementedError) as err:
        raise DownloadError(f"{archive.name} is not a readable zip ({err}); unpack it with another tool and run "
                            "`mednf import-official`") from None


def safe_extract(archive: Path, into: Path, *, allow_torch_files: bool = False) -> None:
    """Unpack a tar, refusing absolute paths, ``..``, links and special files (before writing anything).

    Pickle-based files are refused too, unless ``allow_torch_files`` (the official release's ``.pt`` files,
    which :mod:`mednf.remote.official` reads weights-only and allow-listed, never with ``pickle``)."""
    with tarfile.open(archive, "r:*") as tar:
        members = tar.getmembers()
        for member in members:
            if _unsafe_name(member.name) or not (member.isfile() or member.isdir()):
                raise DownloadError(f"{archive.name} holds an unsafe entry {member.name!r} (absolute path, '..', "
                                    "link or device); refusing to unpack it")
            if member.name.lower().endswith(_PICKLE_SUFFIXES) and not (allow_torch_files and member.name.endswith(".pt")):
                raise DownloadError(f"{archive.name} holds {member.name!r}, a pickle-based file; mednf's format has "
                                    "no pickle and never unpickles a download, refusing the archive")
        _check_space(archive, sum(m.size for m in members), into)
        tar.extractall(into, members=members, filter="data")


ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")
