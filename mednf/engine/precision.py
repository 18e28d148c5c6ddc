"""Numerical precision of the engine's matrix products: ``fp32`` (default), ``tf32`` or ``bf16``.

The user's request is ``field.precision`` (:class:`mednf.engine.config.FieldConfig`, so it travels with
the engine config into the manifest). :func:`resolve_precision` turns it into a :class:`Precision` for a
device — what runs, and why it differs from the request — once per build, meta-learner or fit
(:class:`mednf.engine.execution.Execution` carries it with the device). That object is handed down: the
meta-learning step and the fit pass it to :func:`mednf.engine.field.prepare`, and run inside
:func:`matmul_switches` for torch's global CUDA switches. A field prepared without one is fp32 (decoding,
the exactness tests).

What each format does:

- ``fp32``: every product in float32. Global torch switches are left as they are.
- ``tf32``: float32 tensors, CUDA matrix products on the tensor cores in TF32
  (``torch.backends.cuda.matmul.allow_tf32``, set inside :func:`matmul_switches` and restored after). TF32
  exists only on CUDA (compute capability ≥ 8.0): elsewhere it runs fp32 and says so where it is resolved.
- ``bf16``: the hidden layers' products ``(ω_k W_k) h`` (≈ all the FLOPs) take bfloat16 operands and
  accumulate in float32 (oneDNN/AMX on CPU, tensor cores on CUDA, where reduced-precision reductions are
  switched off inside :func:`matmul_switches`). The GEMM returns bfloat16: torch has no bf16-in/fp32-out
  product on the CPU. What stays fp32, chosen by measurement (benchmarks/RESULTS.md, "Precision"): the first
  layer (C-wide, cheap), the folded biases / shift map ``m(φ)`` and its transpose in the backward, the sine
  argument (the product is added to the per-signal bias in fp32 and the sine/cosine are taken in
  fp32), the residual stream ``h``, the output layer, every sum over points, and the latents with
  their SGD update (owned by meta/fit, which keep φ in fp32). bf16 needs hardware support: on the CPU
  ``amx_bf16`` or ``avx512_bf16`` (checked through ``/proc/cpuinfo`` or torch), on CUDA compute capability
  ≥ 8.0. Without it: one warning where it is resolved, fp32, and the effective precision says fp32.

The resolved :class:`Precision`'s ``to_dict()`` is what a build records beside the device.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mednf.engine.config import PRECISIONS, check_precision


class PrecisionWarning(UserWarning):
    """The requested precision cannot be used on this device; the engine runs (and records) another."""


@dataclass(frozen=True)
class Precision:
    """A resolved precision: what was asked, what runs, and which parts run in the reduced format.

    The ``*_bf16`` switches exist to measure what each part costs in accuracy (benchmarks/precision.py,
    through :func:`bf16_parts`); otherwise they are off, the setting that measurement kept.
    """

    requested: str = "fp32"
    effective: str = "fp32"
    device: str = "cpu"  # device type
    detail: str = ""  # hardware used, or why effective differs from requested
    first_layer_bf16: bool = False  # coords @ W_1 in bf16 (else fp32)
    shift_bf16: bool = False  # φ → per-layer biases (and ∂/∂bias → ∂/∂φ) in bf16 (else fp32)
    sine_argument_bf16: bool = False  # W h + bias rounded to bf16, sin/cos taken in bf16 (else fp32)

    @property
    def measures_parts(self) -> bool:
        """One of the measurement-only parts is switched on (:func:`bf16_parts`)."""
        return self.first_layer_bf16 or self.shift_bf16 or self.sine_argument_bf16

    @property
    def bf16(self) -> bool:
        """The hidden layers' products run in bfloat16."""
        return self.effective == "bf16"

    def to_dict(self) -> dict[str, str]:
        """Requested and effective precision, device type and detail, as recorded in a manifest."""
        return {"requested": self.requested, "effective": self.effective, "device": self.device,
                "detail": self.detail}


FP32 = Precision()


# ---------------------------------------------------------------------------------------------- hardware


@functools.lru_cache(maxsize=1)
def _cpuinfo_flags() -> frozenset[str] | None:
    """The processor's feature flags from /proc/cpuinfo (Linux), None where it cannot be read."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return None


def _torch_cpu_check(name: str) -> bool:
    check = getattr(torch.cpu, name, None)  # private helpers of torch.cpu (present in torch ≥ 2.3)
    try:
        return bool(check()) if callable(check) else False
    except Exception:  # noqa: BLE001 - a capability probe must never fail the run
        return False


def cpu_bf16_units() -> str | None:
    """The processor's bfloat16 matrix / dot-product unit oneDNN uses (``"amx_bf16"`` or ``"avx512_bf16"``),
    or None when it has none (bf16 would be emulated, slower than fp32)."""
    if not torch.backends.mkldnn.is_available():
        return None
    flags = _cpuinfo_flags()
    if flags is not None:
        return next((f for f in ("amx_bf16", "avx512_bf16") if f in flags), None)
    if _torch_cpu_check("_is_amx_tile_supported"):
        return "amx_bf16"
    if _torch_cpu_check("_is_avx512_bf16_supported"):
        return "avx512_bf16"
    return None


def bf16_support(device: torch.device) -> tuple[bool, str]:
    """Whether ``device`` runs bf16 products in hardware, and what with (or why not).

    The injection point for tests: replace it (``monkeypatch.setattr(precision, "bf16_support", ...)``) or
    pass ``support=`` to :func:`resolve_precision`.
    """
    if device.type == "cpu":
        units = cpu_bf16_units()
        if units is None:
            return False, "this CPU has no bf16 matrix units (neither amx_bf16 nor avx512_bf16)"
        return True, f"CPU {units} via oneDNN"
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        if major < 8:
            return False, f"this GPU (compute capability {major}.{minor}) has no bf16 tensor cores (needs ≥ 8.0)"
        return True, f"CUDA tensor cores (compute capability {major}.{minor})"
    return False, f"bf16 is not supported by mednf on {device.type} devices"


def _tf32_support(device: torch.device) -> tuple[bool, str]:
    if device.type != "cuda":
        return False, "TF32 exists only for CUDA matrix products"
    major, minor = torch.cuda.get_device_capability(device)
    if major < 8:
        return False, f"this GPU (compute capability {major}.{minor}) has no tf32 tensor cores (needs ≥ 8.0)"
    return True, f"CUDA tensor cores (compute capability {major}.{minor})"


def resolve_precision(
    requested: str,
    device: torch.device | str | None = None,
    *,
    warn: bool = True,
    support: Callable[[torch.device], tuple[bool, str]] | None = None,
    stacklevel: int = 1,
) -> Precision:
    """What ``requested`` becomes on ``device``: unknown names are a one-line ConfigError; a format the
    device cannot run falls back to fp32 with one :class:`PrecisionWarning` (``warn``; resolve once and
    hand the result down, so that it is said once).

    ``support`` replaces :func:`bf16_support` (the hardware check for bf16), e.g. to test the fallback.
    ``stacklevel`` is the warning's, counted from the caller of this function (1: the line that called it).
    """
    requested = check_precision(requested)
    device = torch.device("cpu" if device is None else device)
    if requested == "fp32":
        return Precision("fp32", "fp32", device.type)
    check = _tf32_support if requested == "tf32" else (support or bf16_support)
    ok, detail = check(device)
    if ok:
        return Precision(requested, requested, device.type, detail)
    if warn:
        warnings.warn(f"precision {requested} is not available on {device}: {detail}; running fp32 "
                      "(recorded as effective fp32)", PrecisionWarning, stacklevel=stacklevel + 1)
    return Precision(requested, "fp32", device.type, detail)


# ---------------------------------------------------------------------------------------------- use


def bf16_parts(precision: Precision, **parts: bool) -> Precision:
    """Measurement only: ``precision`` with ``parts`` also in bf16 where it runs bf16, e.g.
    ``bf16_parts(used, first_layer_bf16=True)`` (benchmarks/precision.py measures what each part costs)."""
    known = {f.name for f in dataclasses.fields(Precision) if f.name.endswith("_bf16")}
    unknown = sorted(set(parts) - known)
    if unknown:
        raise TypeError(f"unknown bf16 parts {unknown}: expected some of {sorted(known)}")
    flags: dict[str, Any] = parts  # mypy checks ``**`` against every field's type, not just the bool ones named
    return dataclasses.replace(precision, **flags) if precision.bf16 else precision


def _swap_cuda_flag(name: str, value: bool) -> Callable[[], None]:
    """Set ``torch.backends.cuda.matmul.<name>``; return the undo."""
    matmul = torch.backends.cuda.matmul
    previous = getattr(matmul, name)
    setattr(matmul, name, value)
    return lambda: setattr(matmul, name, previous)


def _swap_tf32(on: bool) -> Callable[[], None]:
    try:  # the legacy switch, as the rest of mednf and most user code set it
        return _swap_cuda_flag("allow_tf32", on)
    except RuntimeError:  # this process configured TF32 through the new API: stay with it
        return _swap_cuda_flag_new("tf32" if on else "ieee")


def _swap_cuda_flag_new(value: str) -> Callable[[], None]:
    matmul = torch.backends.cuda.matmul
    previous = matmul.fp32_precision
    matmul.fp32_precision = value
    return lambda: setattr(matmul, "fp32_precision", previous)


def float32_products(precision: Precision) -> str:
    """The float32 matrix-product precision (torch's setting) that a run in ``precision`` needs: ``"high"``
    (TF32) for tf32 on CUDA, else ``"highest"`` (IEEE float32: fp32, and the float32 parts of bf16)."""
    return "high" if precision.device == "cuda" and precision.effective == "tf32" else "highest"


def _swap_float32_products(value: str) -> Callable[[], None]:
    """``torch.set_float32_matmul_precision(value)`` (CUDA TF32 and the CPU's oneDNN products alike); the undo.
    A process that configured the backends through torch's newer per-backend API keeps that API."""
    previous = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision(value)
        return lambda: torch.set_float32_matmul_precision(previous)
    except RuntimeError:
        return _swap_tf32(value == "high")


@contextlib.contextmanager
def matmul_switches(precision: Precision) -> Iterator[None]:
    """Set torch's global matrix-product switches as ``precision`` needs them, restored on exit, whatever the
    caller set before: float32 products in IEEE float32 for fp32 (a global ``"medium"`` would otherwise let
    oneDNN run them in bf16 on a CPU with bf16 units, and ``"high"`` TF32 on CUDA), TF32 for tf32 on CUDA, and
    for bf16 reduced-precision reductions off (fp32 accumulation inside the bf16 GEMMs)."""
    undo: list[Callable[[], None]] = []
    try:
        undo.append(_swap_float32_products(float32_products(precision)))
        if precision.device == "cuda" and precision.bf16:  # fp32 accumulation inside the bf16 GEMMs
            undo.append(_swap_cuda_flag("allow_bf16_reduced_precision_reduction", False))
        yield
    finally:
        for step in reversed(undo):
            step()


__all__ = ["FP32", "PRECISIONS", "Precision", "PrecisionWarning", "bf16_parts", "bf16_support", "cpu_bf16_units",
           "matmul_switches", "resolve_precision"]
