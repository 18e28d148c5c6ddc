"""mednf: medical datasets as neural fields (MedFuncta / MedNF).

``mednf.load(name_or_path, split=...)`` and ``mednf.info(name)`` are the entry points for users of a
built dataset (see :mod:`mednf.dataset`); they import their dependencies on first call.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"


def load(*args: Any, **kwargs: Any) -> Any:
    """See :func:`mednf.dataset.load`."""
    from mednf.dataset import load as _load

    return _load(*args, **kwargs)


def info(*args: Any, **kwargs: Any) -> Any:
    """See :func:`mednf.dataset.info`."""
    from mednf.dataset import info as _info

    return _info(*args, **kwargs)
