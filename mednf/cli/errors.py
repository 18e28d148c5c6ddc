"""The one place where a command's failure becomes one line ``error: …`` and its exit status.

User mistakes (a :class:`~mednf.errors.MednfError`) and environment faults (a missing folder, a full disk,
too little memory, a truncated file) end in that line, without a traceback; anything else is a bug and
raises. ``MEDNF_DEBUG=1`` shows the traceback instead of the line.

Exit status (:func:`exit_status`), as in click and most Unix tools:

- **2**: the command line is wrong: click's usage errors (an unknown option, a missing argument, a value
  outside a closed set) and mednf's checks of a value given there or in a builder file
  (:class:`~mednf.errors.ConfigError`). Rerunning the same command cannot succeed.
- **1**: the command ran and failed: a dataset not found or damaged, a download or build that failed, a lock
  held by another process, a full disk, too little memory. Rerunning may succeed once that is fixed.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import sys
import traceback
from pathlib import Path
from typing import Any

import click

from mednf.errors import ConfigError, MednfError
from mednf.io.files import open_append
from mednf.optional import MissingDependencyError

_OS_FIXES = {
    errno.ENOENT: "check that the path and its folder exist",
    errno.EEXIST: "something is in the way at that path; move it or choose another path",
    errno.ENOTDIR: "a part of the path is a file, not a folder; check the path",
    errno.EISDIR: "the path is a folder; give a file name",
    errno.EACCES: "check its permissions, or choose another path",
    errno.EPERM: "check its permissions, or choose another path",
    errno.EROFS: "the file system is read-only; choose another path",
    errno.EMFILE: "too many open files; raise the limit (ulimit -n) and rerun",
    errno.ENAMETOOLONG: "a name in the path is too long; use a shorter one",
    errno.EIO: "the device reported an I/O error; check the disk",
}
_MEMORY_FIXES = {
    "build": "lower --batch-size or --set fit.memory_budget_mb=…, or build on a machine with more memory",
    "decode": "decode fewer --indices or at a smaller --size",
    "encode": "encode fewer images at a time",
}


def debug() -> bool:
    """Whether ``MEDNF_DEBUG`` asks for tracebacks instead of one-line errors."""
    return os.environ.get("MEDNF_DEBUG", "") not in ("", "0")


def _mib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def _free_space(path: Path) -> str:
    for folder in (path, *path.parents):
        if folder.is_dir():
            try:
                return f"{_mib(shutil.disk_usage(folder).free)} free"
            except OSError:
                return "free space unknown"
    return "free space unknown"


def _log_pointer(build_dir: Path | None) -> str:
    log = build_dir / "build.log" if build_dir is not None else None
    return f" (traceback in {log})" if log is not None and log.is_file() else ""


def _os_error_line(err: OSError, ctx: click.Context, build_dir: Path | None) -> str:
    command = f"mednf {ctx.info_name}"
    path = err.filename or build_dir or ctx.params.get("out")
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        where = Path(path) if path is not None else Path.cwd()
        needed = getattr(err, "needed_bytes", None)  # set by code that knows how much it tried to write
        amount = (f"needs {_mib(needed)}, " if isinstance(needed, int) else "") + _free_space(where)
        if build_dir is not None:
            return (f"no space left on the device of {where} ({amount}); free some space and rerun the same "
                    f"command: the build resumes where it stopped{_log_pointer(build_dir)}")
        return f"{command}: no space left on the device of {where} ({amount}); free some space or write elsewhere"
    code = errno.errorcode.get(err.errno) if err.errno is not None else None
    reason = f"{err.strerror or err}" + (f" [{code}]" if code else "")
    if path is not None and err.filename2:
        path = f"{path} → {err.filename2}"
    line = f"{command} failed" + (f" on {path}" if path is not None else "") + f": {reason}"
    line += f"; {_OS_FIXES.get(err.errno or 0, 'check the path and the disk')}"
    return line + _log_pointer(build_dir)


def _out_of_memory(err: BaseException) -> bool:
    """A MemoryError, or torch's way of saying the same (CPU allocator failure, CUDA out of memory)."""
    if isinstance(err, MemoryError):
        return True
    text = str(err)
    return isinstance(err, RuntimeError) and (type(err).__name__ == "OutOfMemoryError" or "can't allocate memory"
                                              in text or "CUDA out of memory" in text)


def error_line(err: BaseException, ctx: click.Context, build_dir: Path | None) -> str | None:
    """The one line for ``err``, or None when it is not a user mistake or environment fault (a bug)."""
    if isinstance(err, MednfError):
        return str(err)
    if isinstance(err, OSError):
        return None if err.errno == errno.EPIPE else _os_error_line(err, ctx, build_dir)  # EPIPE: click's
    if _out_of_memory(err):
        tried = re.search(r"tried to allocate (\d+) bytes", str(err))
        amount = f"it tried to allocate {_mib(int(tried.group(1)))}" if tried else "not enough memory"
        fix = _MEMORY_FIXES.get(ctx.info_name or "", "use a machine with more memory")
        return f"mednf {ctx.info_name} ran out of memory ({amount}); {fix}"
    if isinstance(err, RuntimeError) and "home directory" in str(err):  # pathlib's expanduser of "~nosuchuser/…"
        return (f"mednf {ctx.info_name}: a path starting with ~ names a user this machine does not know "
                f"({str(err).rstrip('.')}); write the path in full")
    if isinstance(err, EOFError):
        return (f"mednf {ctx.info_name} read a file that ends too early ({str(err) or 'EOFError'}); check that the "
                "files you gave are complete")
    return None


USAGE = 2
FAILURE = 1


def exit_status(err: BaseException) -> int:
    """2 for a wrong command line (:class:`~mednf.errors.ConfigError`), 1 for every other failure (a library
    that is not installed included: the command was right, the install lacks an extra)."""
    if isinstance(err, RuntimeError) and "home directory" in str(err):
        return USAGE  # "~nosuchuser/x" given on the command line
    return USAGE if isinstance(err, ConfigError) and not isinstance(err, MissingDependencyError) else FAILURE


def _log_traceback(build_dir: Path | None) -> None:
    """Append the traceback to an existing ``build.log`` (the one line points there)."""
    if build_dir is None or not (build_dir / "build.log").is_file():
        return
    try:
        with os.fdopen(open_append(build_dir / "build.log"), "a", encoding="utf-8") as log:
            log.write(traceback.format_exc())
    except OSError:
        pass  # e.g. the disk is full, or a link is there (never followed): the line on the console is all there is


class GuardedCommand(click.Command):
    """A command whose user mistakes and environment faults end in one line and :func:`exit_status`."""

    def build_dir(self, ctx: click.Context) -> Path | None:
        """The folder of a resumable build this command writes (its ``build.log`` gets the traceback and the
        line says that a rerun resumes), or None; only ``mednf build`` has one."""
        return None

    def invoke(self, ctx: click.Context) -> Any:
        """Run the command; a user mistake or environment fault ends in one line and :func:`exit_status`."""
        try:
            return super().invoke(ctx)
        except (MednfError, OSError, MemoryError, EOFError, RuntimeError) as err:
            build_dir = self.build_dir(ctx) if not isinstance(err, MednfError) else None
            line = error_line(err, ctx, build_dir)
            if line is None or debug():
                raise
            _log_traceback(build_dir)
            click.echo(f"error: {line}", err=True)
            sys.exit(exit_status(err))


class _OneLineUsageError(click.UsageError):
    """click's usage error (an unknown option, a missing argument, a value outside its set) shown as one line
    ``error: …`` with the command to ask for help, instead of click's usage block."""

    def show(self, file: Any = None) -> None:
        """Print the one line on standard error."""
        hint = f"; see `{self.ctx.command_path} --help`" if self.ctx is not None else ""
        click.echo(f"error: {self.format_message().rstrip('.')}{hint}", err=True)


class GuardedGroup(click.Group):
    """A group whose commands (``@group.command()``) end their errors in one line (:class:`GuardedCommand`), click's
    usage errors included (exit status 2)."""

    command_class = GuardedCommand

    def invoke(self, ctx: click.Context) -> Any:
        """Run the chosen command; a usage error of it (or an unknown command) becomes one line."""
        try:
            return super().invoke(ctx)
        except click.UsageError as err:
            if isinstance(err, _OneLineUsageError):
                raise
            raise _OneLineUsageError(err.format_message(), err.ctx) from None
