"""User-facing errors. Each message is one line: the value, what was expected and the fix.

The CLI prints any :class:`MednfError` as ``error: <message>`` and exits non-zero, without a traceback.
"""

from __future__ import annotations


class MednfError(Exception):
    """A mistake the user can fix (bad value, missing file, wrong checksum, busy output directory)."""


class SourceError(MednfError):
    """Raw data is missing, corrupt or not what the builder expects."""


class BuildError(MednfError):
    """A build cannot start or continue (locked, unwritable, inconsistent with an earlier run)."""
