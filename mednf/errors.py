"""Every error mednf raises on purpose. Each message is one line: the value, what was expected and the fix.

The CLI prints any :class:`MednfError` as ``error: <message>`` without a traceback, and exits with status 2
for a :class:`ConfigError` (the command line or builder file is wrong) and 1 for the others (it ran and
failed). The subclasses say which stage failed, so callers can catch one kind.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class MednfError(Exception):
    """A mistake the user can fix (bad value, missing file, wrong checksum, busy output directory)."""


class ConfigError(MednfError, ValueError):
    """A hyper-parameter, option or builder-file value is invalid (name, value, expectation, fix)."""


class SourceError(MednfError):
    """Raw data is missing, corrupt or not what the builder expects."""


class BuildError(MednfError):
    """A build cannot start or continue (locked, unwritable, inconsistent with an earlier run)."""


class LockedError(BuildError):
    """Another live process holds the lock of a dataset directory (``role``: build, download, import)."""

    def __init__(self, message: str, role: str = "?", pid: str = "?") -> None:
        super().__init__(message)
        self.role = role
        self.pid = pid


class FormatError(MednfError):
    """A dataset directory is incomplete, damaged, or does not match its manifest."""


class NotFoundError(MednfError):
    """No dataset of that name or path is available locally."""


class DownloadError(MednfError):
    """A download failed or did not verify; nothing was kept."""


class PublishError(MednfError):
    """An upload cannot start (no token, a bad repository name) or did not complete."""


class OfficialFormatError(MednfError):
    """A file of the official release is missing, malformed, or not allowed (e.g. a foreign pickle)."""


class OfficialImportError(MednfError):
    """The official release does not fit the named sub-dataset, or the output cannot be written."""


class EvalError(MednfError):
    """An evaluation cannot run (source images unavailable, bad split)."""


class ClassifyError(MednfError):
    """A classification run cannot start (no labels, features unavailable, bad options)."""


class EncodeError(MednfError):
    """Images cannot be encoded into a space (wrong size, layout or file)."""


class TransformError(MednfError):
    """A user's ``transform`` (``mednf.load(..., transform=fn)``) failed on a sample, or returned nothing."""


def closest(word: str, choices: Iterable[str], cutoff: float = 0.6) -> str | None:
    """The choice closest to ``word`` (difflib), or None when none is close: the one "did you mean" lookup."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=cutoff)
    return close[0] if close else None


def did_you_mean(word: str, choices: Iterable[str], cutoff: float = 0.6) -> str:
    """``"; did you mean 'x'?"`` for the closest of ``choices``, or ``""`` when none is close."""
    close = closest(word, choices, cutoff)
    return f"; did you mean {close!r}?" if close else ""


def match_name(name: str, choices: Iterable[str], where: str) -> str | None:
    """The choice that ``name`` names: the one spelled exactly so, else the one equal to it in any case (None when
    there is none). Two that differ only in case and neither spelled exactly so are a ConfigError naming both:
    which one a case-insensitive lookup would pick would depend on a directory's order."""
    choices = list(choices)
    if name in choices:
        return name
    folded = [c for c in choices if c.lower() == name.lower()]
    if len(folded) > 1:
        raise ConfigError(f"{name!r} matches {', '.join(sorted(folded))} in {where}, which differ only in case: "
                          "give the exact name (or the folder's path)")
    return folded[0] if folded else None
