"""mednf: medical datasets as neural fields (MedFuncta / MedNF).

``mednf.load(name_or_path, split=...)`` and ``mednf.info(name)`` are the entry points for users of a
built dataset (see :mod:`mednf.dataset`); ``mednf.encode`` fits new images into a space (also from
the observed pixels only, ``mask=``), ``mednf.encode_points`` signals known at irregular points,
``mednf.inpaint`` fills unobserved pixels,
``mednf.evaluate`` and ``mednf.classify`` measure one. All import their dependencies on first call.
"""

from __future__ import annotations

from typing import Any

from mednf.version import __version__

__all__ = ["__version__", "classify", "encode", "encode_points", "evaluate", "info", "inpaint", "load"]


def load(*args: Any, **kwargs: Any) -> Any:
    """See :func:`mednf.loading.load`."""
    from mednf.loading import load as _load

    return _load(*args, **kwargs)


def info(*args: Any, **kwargs: Any) -> Any:
    """See :func:`mednf.loading.info`."""
    from mednf.loading import info as _info

    return _info(*args, **kwargs)


def encode(*args: Any, **kwargs: Any) -> Any:
    """See :func:`mednf.tasks.encode.encode`."""
    from mednf.tasks.encode import encode as _encode

    return _encode(*args, **kwargs)


def encode_points(*args: Any, **kwargs: Any) -> Any:
    """See :func:`mednf.tasks.encode.encode_points`."""
    from mednf.tasks.encode import encode_points as _encode_points

    return _encode_points(*args, **kwargs)


def inpaint(*args: Any, **kwargs: Any) -> Any:
    """See :func:`mednf.tasks.inpaint.inpaint`."""
    from mednf.tasks.inpaint import inpaint as _inpaint

    return _inpaint(*args, **kwargs)


def evaluate(*args: Any, **kwargs: Any) -> Any:
    """See :func:`mednf.tasks.evaluate.evaluate`."""
    from mednf.tasks.evaluate import evaluate as _evaluate

    return _evaluate(*args, **kwargs)


def classify(*args: Any, **kwargs: Any) -> Any:
    """See :func:`mednf.tasks.classify.classify`."""
    from mednf.tasks.classify import classify as _classify

    return _classify(*args, **kwargs)
