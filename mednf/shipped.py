"""The data folders mednf ships beside its code: ``builders/`` (builder files, the registry) and ``cards/``.

Installed, they are the packages ``mednf.builders`` and ``mednf.cards`` (pyproject maps the repository's
top-level folders into the wheel). Run from a checkout on ``PYTHONPATH`` without installing (a bare GPU
machine), those packages do not exist: the folders are then read where they stand, beside ``mednf/``.
"""

from __future__ import annotations

from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

SHIPPED = ("builders", "cards")


def shipped_folder(name: str) -> Traversable:
    """The shipped folder ``name`` (one of :data:`SHIPPED`), installed or in the checkout."""
    try:
        return resources.files(f"mednf.{name}")
    except ModuleNotFoundError:
        folder = Path(__file__).resolve().parent.parent / name
        if not folder.is_dir():
            raise
        return folder
