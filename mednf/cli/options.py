"""Options that several commands share, each defined once, and checks of option values.

The help text of ``--root``, ``--gpu`` and ``--medmnist-root`` says what the folder or the device is for in
that command, so each decorator takes it; name, type, default and environment variable are fixed here.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from mednf.errors import ConfigError
from mednf.format.layout import check_outside_datasets
from mednf.openmp import free_cores

F = TypeVar("F", bound=Callable[..., Any])
DATASET_FOLDER = "The folder that holds the datasets, where NAME is looked up [default: $MEDNF_HOME]."
CACHE_FOLDER = "Cache folder [default: $MEDNF_HOME]."


def root_option(help: str = DATASET_FOLDER) -> Callable[[F], F]:
    """``--root DIR``: where datasets are looked up (or downloaded to), instead of ``$MEDNF_HOME``."""
    return click.option("--root", type=click.Path(path_type=Path), help=help)


def gpu_option(help: str) -> Callable[[F], F]:
    """``--gpu N``: run on ``cuda:N`` (None: the CPU); ``help`` says what runs there, e.g. "Decode on cuda:N."."""
    return click.option("--gpu", type=int, default=None, help=help)


def medmnist_root_option(help: str) -> Callable[[F], F]:
    """``--medmnist-root DIR`` (or ``$MEDMNIST_ROOT``): the folder with the MedMNIST npz files."""
    return click.option("--medmnist-root", type=click.Path(path_type=Path), envvar="MEDMNIST_ROOT", help=help)


def check_folder(option: str, path: Path) -> None:
    """Refuse an output file whose folder does not exist, or that would land in a dataset, before any work is
    done."""
    check_outside_datasets(path, option)
    folder = path.expanduser().parent
    if path.expanduser().is_dir():
        raise ConfigError(f"{option} {path} is invalid: it is a folder, expected a file name; name a file in it")
    if not folder.is_dir():
        state = "is not a folder" if folder.exists() else "does not exist"
        raise ConfigError(f"{option} {path} is invalid: its folder {folder} {state}; create it or choose another path")


MAX_THREADS = 4096
"""The most ``--threads`` accepts: more overflows torch's int32 setting (and no machine has that many)."""


def parse_threads(value: str | None) -> int | None:
    """``--threads`` text → a thread count ≥ 1 (None: not given); a one-line ConfigError otherwise."""
    if value is None:
        return None
    text = str(value).strip()
    if not (text.isascii() and text.isdigit()) or not text.strip("0"):
        raise ConfigError(f"--threads {value!r} is invalid: expected a whole number ≥ 1 of CPU threads, e.g. "
                          f"--threads {os.cpu_count() or 4}")
    if len(text.lstrip("0")) > len(str(MAX_THREADS)) or int(text) > MAX_THREADS:  # no int() of 10⁶ digits
        raise ConfigError(f"--threads {value!r} is invalid: expected at most {MAX_THREADS} CPU threads, e.g. "
                          f"--threads {os.cpu_count() or 4}")
    return int(text)


def set_threads(threads: int) -> None:
    """Let torch use ``threads`` CPU threads for its operations (and as many for inter-op work, when torch
    still allows setting that: only before its first parallel work in the process)."""
    import torch  # here, not at the top: `mednf list` and `mednf --help` never load torch

    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(threads)
    except RuntimeError:
        pass  # parallel work already ran in this process (e.g. an earlier command in the same interpreter)


def threads_option(command: Callable[..., Any]) -> Callable[..., Any]:
    """``--threads N`` for a command that computes: checked and applied (:func:`set_threads`) before the
    command's own body runs; a bad N is one line and exit status 2 like every other wrong command line.
    Without it (and without ``$OMP_NUM_THREADS``) the command takes the cores other processes leave free
    (:func:`mednf.openmp.free_cores`, sampled for 0.1 s), at least one: threads that wait at every parallel
    region for a core another job holds made a build 7–10× slower (``benchmarks/RESULTS.md``, "Under load")."""

    @functools.wraps(command)
    def run(*args: Any, threads: str | None = None, **kwargs: Any) -> Any:
        count = parse_threads(threads)
        if count is None and "OMP_NUM_THREADS" not in os.environ:
            count = free_cores()
        if count is not None:
            set_threads(count)
        return command(*args, **kwargs)

    return click.option("--threads", metavar="N", default=None,
                        help="CPU threads for torch (torch.set_num_threads) [default: the cores other processes "
                             "leave free, at least one].")(run)
