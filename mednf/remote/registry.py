"""The registry of published datasets (``builders/registry.toml``; ``$MEDNF_REGISTRY`` replaces it): per
name the Zenodo record / HF repository and the checksums a download must match.
"""

from __future__ import annotations

import os
import re
import stat
import tomllib
from pathlib import Path
from typing import Any

from mednf.errors import ConfigError, DownloadError
from mednf.format.layout import unfinished_build
from mednf.shipped import shipped_folder

REGISTRY_LIMIT = 1 << 20
"""The most bytes a ``$MEDNF_REGISTRY`` file may hold (the shipped one is a few KiB)."""


def _read_registry_file(path: Path, where: str, fix: str) -> str:
    """The text of a user's registry file: a regular file of at most :data:`REGISTRY_LIMIT` bytes, else one line (a
    FIFO would block forever, /dev/zero would fill the memory). Opened without blocking, so a FIFO is refused."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as fh:
        info = os.fstat(fh.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise ConfigError(f"{where} is not a regular file: expected a registry.toml file; {fix}")
        data = fh.read(REGISTRY_LIMIT + 1)
    if len(data) > REGISTRY_LIMIT:
        raise ConfigError(f"{where} is larger than {REGISTRY_LIMIT >> 20} MiB: expected a registry.toml of a few KiB; "
                          f"{fix}")
    return data.decode("utf-8")


def registry() -> dict[str, dict[str, Any]]:
    """Name → entry of every published dataset (keys as written, e.g. ``DermaNF``); a file that cannot be
    read, is not TOML or holds something else than ``[Name]`` tables is one line (ConfigError)."""
    override = os.environ.get("MEDNF_REGISTRY")
    where = f"the registry file {override} (MEDNF_REGISTRY)" if override else "the shipped registry.toml"
    fix = "fix it or unset MEDNF_REGISTRY" if override else "reinstall mednf"
    try:
        if override:
            text = _read_registry_file(Path(override), where, fix)
        else:
            text = shipped_folder("builders").joinpath("registry.toml").read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        reason = err.strerror if isinstance(err, OSError) and err.strerror else type(err).__name__
        raise ConfigError(f"{where} cannot be read ({reason}); {fix}") from None
    try:
        table = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:  # its message names line and column, never the text
        raise ConfigError(f"{where} is not valid TOML ({str(err).splitlines()[0][:120]}); {fix}") from None
    except (RecursionError, ValueError):  # nested arrays too deep; a number Python will not convert
        raise ConfigError(f"{where} is not valid TOML (nested too deep or a number too long); {fix}") from None
    for key, entry in table.items():
        if not isinstance(entry, dict):
            raise ConfigError(f"{where}: {key[:60]!r} is {type(entry).__name__}, expected a table [Name] with "
                              f"zenodo_record / hf_repo; {fix}")
    return table


def is_registered(name: str) -> bool:
    """Whether the registry has ``name`` (case-insensitively)."""
    return any(key.lower() == name.lower() for key in registry())


def registry_entry(name: str) -> tuple[str, dict[str, Any]]:
    """``(name as registered, entry)`` of ``name`` (case-insensitively); a DownloadError naming the known ones."""
    for key, entry in registry().items():
        if key.lower() == name.lower():
            return key, entry
    raise DownloadError(f"no published copy of {name!r} is registered (known: {', '.join(registry()) or 'none'}); "
                        f"build it with `mednf build {name.lower()}`")


def offline() -> bool:
    """Whether ``$MEDNF_OFFLINE`` forbids the network (set to anything but empty or 0)."""
    return os.environ.get("MEDNF_OFFLINE", "") not in ("", "0")


def offline_check(what: str, how: str) -> None:
    """A DownloadError when offline: ``what`` is not in the cache, ``how`` says which file to fetch by hand
    and what to do with it."""
    if offline():
        raise DownloadError(f"{what} is not in the cache and MEDNF_OFFLINE is set; {how}, or unset MEDNF_OFFLINE")


def check_target(target: Path) -> None:
    """A DownloadError when ``target`` holds an unfinished build (never replaced by a download)."""
    if unfinished_build(target):
        raise DownloadError(f"{target} holds an unfinished `mednf build`; finish it (rerun the build) or remove it, "
                            "or download into another --root")


_PIN_FIELDS = {"sha256": (re.compile(r"[0-9a-f]{64}"), "64 lower-case hex digits"),
               "md5": (re.compile(r"[0-9a-f]{32}"), "32 lower-case hex digits")}


def pinned_files(key: str, entry: dict[str, Any], *, required: tuple[str, ...] = ()) -> dict[str, dict[str, Any]]:
    """The entry's pinned files (``files = { "<name>" = { sha256 = "…", md5 = "…", size = N } }``), each
    field checked; ``required`` fields must be present."""
    where = f"registry entry [{key}] ({os.environ.get('MEDNF_REGISTRY') or 'the shipped registry.toml'})"
    files = entry.get("files", {})
    if not isinstance(files, dict):
        raise DownloadError(f"{where}: files is {files!r}, expected a table of file names; fix the registry")
    for name, pin in files.items():
        if not isinstance(pin, dict):
            raise DownloadError(f"{where}: files.{name} is {pin!r}, expected {{ sha256/md5 = \"…\", size = N }}; "
                                "fix the registry")
        for field in required:
            if field not in pin:
                raise DownloadError(f"{where}: files.{name} has no {field}; add it (see `mednf export`)")
        size = pin.get("size", 0)
        if type(size) is not int or size < 0:
            raise DownloadError(f"{where}: files.{name}.size is {size!r}, expected a whole number of bytes; "
                                "fix the registry")
        for field, (pattern, expected) in _PIN_FIELDS.items():
            if field in pin and not (isinstance(pin[field], str) and pattern.fullmatch(pin[field])):
                raise DownloadError(f"{where}: files.{name}.{field} is {pin[field]!r}, expected {expected}; "
                                    "fix the registry")
    return files
