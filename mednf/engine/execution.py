"""How the engine runs: on which device, in which resolved precision — settled once, then handed down.

``field.precision`` is what the user asked for (it travels with the engine config into the manifest);
what a device makes of it is an execution setting, like the fit's batch size. An :class:`Execution` is
resolved once per build, meta-learner or fit (:meth:`Execution.resolve`: a precision the device lacks is one
:class:`~mednf.engine.precision.PrecisionWarning`, there) and passed explicitly to
:class:`mednf.engine.meta.MetaLearner` and :func:`mednf.engine.fit.fit_latents`, which pass its
:class:`~mednf.engine.precision.Precision` to :func:`mednf.engine.field.prepare`. Nothing is read from
ambient state.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from mednf.engine.precision import FP32, Precision, resolve_precision
from mednf.errors import ConfigError


@dataclass(frozen=True)
class Execution:
    """Where the engine runs and the precision it runs there (resolved: see :attr:`Precision.effective`)."""

    device: torch.device = torch.device("cpu")  # noqa: RUF009 (immutable)
    precision: Precision = FP32

    @classmethod
    def resolve(cls, precision: str, device: torch.device | str | None = None, *, warn: bool = True,
                support: Callable[[torch.device], tuple[bool, str]] | None = None,
                stacklevel: int = 1) -> Execution:
        """``precision`` (a name, e.g. ``field.precision``) resolved for ``device`` (default CPU) by
        :func:`mednf.engine.precision.resolve_precision`, which warns once if it falls back to fp32
        (``stacklevel``: 1 points the warning at the line that called this, 2 at its caller, …)."""
        device = torch.device("cpu" if device is None else device)
        return cls(device, resolve_precision(precision, device, warn=warn, support=support,
                                             stacklevel=stacklevel + 1))


def given_or_resolved(execution: Execution | None, precision: str, device: torch.device | str | None,
                      *, stacklevel: int = 1) -> Execution:
    """``execution`` when one is given (``device``, if also given, must be its device), else ``precision`` on
    ``device`` resolved now — the entry of a meta-learner or a fit that was not handed one."""
    if execution is None:
        return Execution.resolve(precision, device, stacklevel=stacklevel + 1)
    if device is not None and torch.device(device) != execution.device:
        raise ConfigError(f"device = {str(device)!r} differs from the execution's {str(execution.device)!r}: "
                          "give one of them")
    return execution
