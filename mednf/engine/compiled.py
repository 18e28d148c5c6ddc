"""The compiled path: used where it is wanted, and only after it agrees with the eager reference.

``MEDNF_COMPILE`` says where the engine's hot bodies run compiled by ``torch.compile`` (Inductor: on CUDA it
emits fused Triton kernels for the sine layers' bias + sin + cos + modulation passes, on the CPU C++ loops):

- ``auto`` (default): on CUDA; eager on the CPU, whose bf16 fit has its own switch (``MEDNF_FIT_KERNEL``);
- ``on``: everywhere (the CPU too: how the tests exercise the compiled bodies without a GPU);
- ``off``: nowhere.

Compiled code is trusted only after a **self-check** (:func:`self_check`): the first batch of a meta-learner
(its meta-gradient) and of a fit (its latents) is computed by the eager reference and by the compiled body,
mode by mode (CUDA graphs first where they apply, then plain fused kernels), and the first mode whose
relative difference stays within :data:`TOLERANCE` of the precision is used from then on. A failure to
compile or a mismatch warns once (:class:`CompileWarning`), is recorded (:class:`CompileReport`, written
into the manifest by a build) and the run goes on eager: the same numbers as without compiling.
"""

from __future__ import annotations

import math
import os
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar

import torch

from mednf.errors import ConfigError

ENV = "MEDNF_COMPILE"
CHOICES = ("auto", "on", "off")
EAGER = "eager"
# Relative L2 difference (‖compiled − eager‖ / ‖eager‖) allowed by the self-check, by effective precision.
# Rounding alone moves a result this much: at the paper configuration (2d-64, H = 20 with gradient
# rescaling) the eager fp32 fit's latents differ from float64's by 1.8e-3 and the compiled kernel's (other
# summation order) from eager fp32's by 1.9e-3 (2026-12-07, AMD EPYC); tf32 and bf16 round their 10- and
# 7-bit products at different places in the two paths. A miscompiled body is off by far more.
TOLERANCE = {"fp32": 1e-2, "tf32": 5e-2, "bf16": 1e-1}

T = TypeVar("T")


class CompileWarning(UserWarning):
    """The compiled path could not be used (it failed to compile, or differed from eager): the run is eager."""


def requested() -> str:
    """``MEDNF_COMPILE`` (default ``auto``); a one-line ConfigError for anything else."""
    value = os.environ.get(ENV, "auto").strip().lower() or "auto"
    if value not in CHOICES:
        raise ConfigError(f"{ENV} = {value!r} is invalid: expected one of {', '.join(CHOICES)}; unset it for auto")
    return value


def wanted(device: torch.device) -> bool:
    """Whether the hot bodies should run compiled on ``device`` (before the self-check says whether they may)."""
    choice = requested()
    return choice == "on" or (choice == "auto" and device.type == "cuda")


def modes(device: torch.device, *, graphs: bool) -> tuple[str, ...]:
    """The ``torch.compile`` modes the self-check tries, in order: with ``graphs``, CUDA graphs first
    (``reduce-overhead``: one launch per captured body) on CUDA; then plain fused kernels (``default``)."""
    return ("reduce-overhead", "default") if graphs and device.type == "cuda" else ("default",)


@dataclass
class CompileReport:
    """What the self-check found: the kernel used (``eager`` or a compile mode) and why."""

    used: str  # "eager", or the torch.compile mode that passed
    requested: str  # MEDNF_COMPILE
    tolerance: float
    difference: float | None = None  # relative L2 of the mode used (None: eager)
    tried: dict[str, str] = field(default_factory=dict)  # mode → "ok …" or why it was not used
    seconds: float = 0.0  # the self-check's wall time (eager reference + compiling + compiled run)

    def to_dict(self) -> dict[str, Any]:
        """For the manifest."""
        return asdict(self)


_WARNED: set[str] = set()


def relative_difference(reference: Sequence[torch.Tensor], candidate: Sequence[torch.Tensor]) -> float:
    """``‖candidate − reference‖ / ‖reference‖`` over all tensors together (float64 sums; inf when not finite)."""
    num = sum(float((c.double() - r.double()).square().sum()) for r, c in zip(reference, candidate))
    den = sum(float(r.double().square().sum()) for r in reference)
    value = math.sqrt(num / den) if den > 0 else math.sqrt(num)
    return value if math.isfinite(value) else math.inf


def self_check(what: str, run: Callable[[str], T], tensors: Callable[[T], Sequence[torch.Tensor]],
               modes_to_try: Sequence[str], precision: str, *, warn: bool = True) -> tuple[str, T, CompileReport]:
    """Run ``run("eager")`` and ``run(mode)`` for each mode until one agrees within the precision's tolerance.

    Args:
        what: names the body in the warning ("the meta-gradient", "the fit").
        run: computes the checked result with the eager body or a compile mode.
        tensors: the tensors of a result to compare.
        modes_to_try: compile modes in order of preference (:func:`modes`).
        precision: the effective precision (:data:`TOLERANCE`'s key).
        warn: a :class:`CompileWarning` (once per ``what`` and process) when eager is kept; without, the caller
            says it.

    Returns:
        ``(kernel, its result, report)``: the first mode that passed, or ``"eager"`` and the reference.
    """
    started = time.perf_counter()
    tolerance = TOLERANCE.get(precision, TOLERANCE["fp32"])
    reference = run(EAGER)
    report = CompileReport(EAGER, requested(), tolerance)
    for mode in modes_to_try:
        try:
            candidate = run(mode)
            difference = relative_difference(tensors(reference), tensors(candidate))
        except Exception as error:  # noqa: BLE001 - any compiler or runtime failure: eager gives the same numbers
            lines = str(error).strip().splitlines() or [type(error).__name__]
            report.tried[mode] = f"failed: {type(error).__name__}: {lines[0][:300]}"
            continue
        if difference <= tolerance:
            report.tried[mode] = f"ok: relative difference {difference:.2e}"
            report.used, report.difference = mode, difference
            report.seconds = time.perf_counter() - started
            return mode, candidate, report
        report.tried[mode] = f"differs from eager by {difference:.2e} (tolerance {tolerance:g})"
    report.seconds = time.perf_counter() - started
    if warn and what not in _WARNED:
        _WARNED.add(what)
        reasons = "; ".join(f"{mode}: {why}" for mode, why in report.tried.items())
        warnings.warn(f"the compiled {what} is not used ({reasons}); it runs eager (the same maths); set "
                      f"{ENV}=off to skip the attempt", CompileWarning, stacklevel=3)
    return EAGER, reference, report


_COMPILED: dict[tuple[str, str], Callable[..., Any]] = {}


def compiled(fn: Callable[..., T], mode: str) -> Callable[..., T]:
    """``torch.compile(fn, mode=mode)`` (whole graph, static shapes), made once per function and mode."""
    key = (f"{fn.__module__}.{fn.__qualname__}", mode)
    if key not in _COMPILED:
        _COMPILED[key] = torch.compile(fn, fullgraph=True, dynamic=False, mode=None if mode == "default" else mode)
    return _COMPILED[key]


__all__ = ["CHOICES", "ENV", "TOLERANCE", "CompileReport", "CompileWarning", "compiled", "modes", "requested",
           "relative_difference", "self_check", "wanted"]
