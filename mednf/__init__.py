"""mednf: medical datasets as neural fields (MedFuncta / MedNF).

The user surface, each imported on first use (so ``import mednf`` stays light) with its real signature
and docstring:

- ``mednf.build(name_or_toml, ...)`` — build a dataset (what ``mednf build`` does) and return its splits;
- ``mednf.load(name_or_path_or_url, split=...)``, ``mednf.info(name)`` — a built dataset
  (:mod:`mednf.dataset`);
- ``mednf.encode(images, space, mask=...)``, ``mednf.encode_points(coords, values, space)`` — fit new
  images (or their observed pixels, or irregular points) into a space; ``mednf.inpaint`` fills pixels;
- ``mednf.evaluate``, ``mednf.classify`` — measure a dataset.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from mednf.version import __version__

if TYPE_CHECKING:  # for editors and type checkers; at run time they are imported on first use
    from mednf.building.api import build
    from mednf.loading import load
    from mednf.lookup import info
    from mednf.tasks.classify import classify
    from mednf.tasks.encode import encode, encode_points
    from mednf.tasks.evaluate import evaluate
    from mednf.tasks.inpaint import inpaint

_LAZY = {"build": "mednf.building.api", "load": "mednf.loading", "info": "mednf.lookup",
         "encode": "mednf.tasks.encode", "encode_points": "mednf.tasks.encode", "inpaint": "mednf.tasks.inpaint",
         "evaluate": "mednf.tasks.evaluate", "classify": "mednf.tasks.classify"}

__all__ = ["__version__", "build", "classify", "encode", "encode_points", "evaluate", "info", "inpaint", "load"]


def __getattr__(name: str) -> Any:
    """The functions of the user surface, imported on first access (PEP 562)."""
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'mednf' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
