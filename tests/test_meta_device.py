"""The GPU path's hot loops, audited on PyTorch's ``meta`` device (tensors without data) in seconds on a CPU.

A paper-config (``2d-64``: K15 L256 P2048, G10, γ .25, B 24 on 64×64×1) meta-iteration and a test-time fit
batch run with an :class:`~mednf.engine.execution.Execution` on ``meta``. Every aten op they dispatch passes
through :class:`DeviceAudit` (a ``TorchDispatchMode``, below autograd: the backward's ops are seen too), which

- counts the ops, the *kernels* (ops on the device that would launch one on CUDA: not views, not bare
  allocations, not transfers) and the bytes those kernels write (each output's size, in-place outputs
  included: a proxy of memory traffic — reads are not counted);
- records every host → device upload, every device → host read (``.item()``, ``bool()``, ``.tolist()``,
  ``.cpu()``: each one a stream sync on CUDA; on ``meta`` it gets a placeholder, zeros, instead of data),
  and every op on host tensors, each with the mednf line that caused it (``torch.tensor(data, device=…)``
  and kin copy host data without dispatching the copy: a ``TorchFunctionMode`` records those uploads);
- flags as violations: a float64 tensor anywhere, an op that mixes host and device tensors (other than a
  transfer), and host work, uploads or syncs at places not declared below as done on purpose.

The ceilings are today's numbers plus a small margin: a change that adds kernels, bytes or syncs fails here.
When a change *lowers* them (fusion, fewer syncs), run ``pytest tests/test_meta_device.py -s`` (it prints the
numbers), write the new ones into the ``*_CEILING`` constants below (plus ≈ 2 %, rounded up) with the
measured value in the comment beside each. The counts depend on torch's decompositions: a new torch
version may move them by a few ops; move the ceilings with it, after checking that no violation appeared.

AdamW and gradient clipping run their ``foreach`` kernels as on CUDA (torch picks them by device type and
does not list ``meta``; :func:`cuda_like_foreach` adds it), so the counts are those a GPU would launch. The
fit runs the eager latent gradient with all points at once (as on CUDA, :func:`~mednf.engine.fit.fit_batch`),
at the batch the planner gives an 80 GiB GPU.
"""

from __future__ import annotations

import collections
import dataclasses
import importlib
import math
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import pytest
import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

import mednf
from mednf.engine import field as nf
from mednf.engine.config import EngineConfig
from mednf.engine.execution import Execution
from mednf.engine.fit import fit_latents
from mednf.engine.memory import CUDA_SHARE, MemoryBudget
from mednf.engine.meta import MetaLearner
from mednf.engine.planner import plan_memory
from mednf.engine.presets import get_preset

DEVICE = torch.device("meta")
PRESET = "2d-64"
SPATIAL = (64, 64)
GPU_BYTES = 80 * 2**30  # the planner's batches are those of an 80 GiB GPU (an H100)

# ---------------------------------------------------------------------------------------------- ceilings
# Measured 2026-12-07, torch 2.13.0 (see the module docstring to update). Per steady-state meta-iteration
# (the second one: the first also creates AdamW's state), B = 24 in one micro-batch:
META_KERNELS_CEILING = 3_610  # measured 3536 (4240 before the lean loop, 2026-12-07)
META_OPS_CEILING = 6_870  # measured 6726 (kernels, views, allocations, host ops, transfers)
META_BYTES_CEILING = 66_200 * 10**6  # measured 64.81 GB
META_SYNCS_CEILING = 0  # the statistics stay on the device (MetaStats); the trainer reads them every k iterations
META_UPLOADS_CEILING = 1  # meta.py step(): the batch of signals, as bytes (a build hands it over on the device)
# Per fit batch (H = 20 steps, with the official gradient rescaling) at the planner's batch (658 signals), and
# per SGD step of it; bytes per signal (kernel counts do not depend on the batch on a GPU, bytes grow with it):
FIT_KERNELS_CEILING = 4_380  # measured 4288
FIT_OPS_CEILING = 6_800  # measured 6658
FIT_BYTES_PER_SIGNAL_CEILING = 9_580 * 10**6  # measured 9.386 GB
FIT_STEP_KERNELS_CEILING = 215  # measured 210
FIT_STEP_BYTES_PER_SIGNAL_CEILING = 467 * 10**6  # measured 458.0 MB
FIT_SYNCS_CEILING = 0  # results are queued into pinned host rows; one wait per fit call (transfer.wait)
FIT_UPLOADS_CEILING = 1  # transfer.upload: the batch of signals, as bytes

ONCE = ("mednf/engine/field.py", "_omega_column_on")  # the ω column: made on the host and uploaded once per process
# Host work and transfers done on purpose, by (file, function) of the innermost mednf frame; anything else
# is a violation. AdamW runs its fused kernel here as on CUDA (step counters on the device); its foreach and
# single-tensor forms keep them on the host (host reads, not syncs), which the torch/optim entry allows.
DECLARED_HOST = {
    ("mednf/engine/metrics.py", "check_signals"),  # the batch is checked in host memory, before its upload
    ("mednf/engine/fit.py", "batch"),  # the fit's batch is sliced from the signals in host memory
    ("mednf/engine/fit.py", "_fit_batches"),  # the fit's results are gathered in host memory …
    ("mednf/engine/transfer.py", "host_buffer"),  # … made there (pinned on CUDA)
    ("mednf/engine/metrics.py", "mse_to_psnr"),  # … and converted to PSNRs there, after the last batch
    ("torch/optim", "*"),
    ONCE,
}
DECLARED_UPLOADS = {("mednf/engine/meta.py", "step"), ("mednf/engine/transfer.py", "upload"), ONCE}
DECLARED_SYNCS: set[tuple[str, str]] = set()  # none: statistics and fit results are read where they are used
# Found by this audit and not fixed yet (each costs a blocking upload on CUDA, where torch copies pageable host
# memory and waits for the stream): drop the entry, and lower the ceiling, when it is gone.
KNOWN_UPLOADS: set[tuple[str, str]] = set()

# ---------------------------------------------------------------------------------------------- the audit

_PACKAGE = str(Path(mednf.__file__).resolve().parent) + "/"  # mednf's frames are named from here: mednf/…
_ATEN = torch.ops.aten
_ALLOCATIONS = {_ATEN.empty.memory_format, _ATEN.empty_strided.default, _ATEN.new_empty.default,
                _ATEN.new_empty_strided.default}
_METADATA = {_ATEN._unsafe_view.default, _ATEN.lift_fresh.default}  # views in all but name


@dataclass(frozen=True)
class Place:
    """Where an op came from: the innermost mednf frame, and the innermost torch.optim / clip frame if any."""

    file: str
    line: int
    function: str
    via: str = ""

    @property
    def key(self) -> tuple[str, str]:
        """``(file, function)``, as in the DECLARED_* sets."""
        return (self.file, self.function)

    def __str__(self) -> str:
        return f"{self.file}:{self.line} ({self.function}){' via ' + self.via if self.via else ''}"


def _place(depth: int = 2) -> Place:
    frame: FrameType | None = sys._getframe(depth)
    via = ""
    while frame is not None:
        name = frame.f_code.co_filename
        if not via and ("/torch/optim/" in name or name.endswith("/torch/nn/utils/clip_grad.py")):
            via = name[name.rindex("/torch/") + 1:] + f":{frame.f_lineno}"
        if name.startswith(_PACKAGE):
            return Place("mednf/" + name[len(_PACKAGE):], frame.f_lineno, frame.f_code.co_name, via)
        frame = frame.f_back
    return Place("?", 0, "?", via)


def _declared(place: Place, declared: set[tuple[str, str]]) -> bool:
    return place.key in declared or (place.via.startswith("torch/optim") and ("torch/optim", "*") in declared)


def _tensors(tree: Any) -> list[torch.Tensor]:
    return [t for t in tree_flatten(tree)[0] if isinstance(t, torch.Tensor)]


def _written_bytes(func: torch._ops.OpOverload, args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> int:
    """Bytes an op writes: its mutated arguments (in place, ``out=``) and its fresh (non-aliasing) returns."""
    schema = func._schema
    total = 0
    values = dict(zip((a.name for a in schema.arguments), args)) | kwargs
    for arg in schema.arguments:
        if arg.alias_info is not None and arg.alias_info.is_write:
            total += sum(t.nbytes for t in _tensors(values.get(arg.name)))
    returns = out if isinstance(out, tuple) else (out,)
    for ret, value in zip(schema.returns, returns):
        if ret.alias_info is None:
            total += sum(t.nbytes for t in _tensors(value))
    return total


@dataclass
class Counts:
    """What one audited call dispatched (see the module docstring)."""

    ops: int = 0
    kernels: int = 0
    bytes: int = 0
    by_op: collections.Counter[str] = field(default_factory=collections.Counter)
    syncs: list[Place] = field(default_factory=list)  # device → host reads
    downloads: list[Place] = field(default_factory=list)  # device → host copies queued (non_blocking): no wait
    uploads: list[Place] = field(default_factory=list)  # host → device copies
    host: collections.Counter[Place] = field(default_factory=collections.Counter)  # ops on host tensors
    violations: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """A few lines for the test's output and the assertion messages."""
        host = ", ".join(f"{place} ×{n}" for place, n in self.host.items()) or "none"
        syncs, uploads = (", ".join(map(str, places)) or "none" for places in (self.syncs, self.uploads))
        return (f"{self.kernels} kernels ({self.ops} aten ops), {self.bytes / 1e9:.2f} GB written; "
                f"syncs {len(self.syncs)}: {syncs}; uploads {len(self.uploads)}: {uploads}; "
                f"host ops {sum(self.host.values())}: {host}; top kernels {self.by_op.most_common(8)}")


_FROM_DATA = {torch.tensor, torch.as_tensor, torch.asarray, torch.Tensor.new_tensor}


class _HostData(TorchFunctionMode):
    """``torch.tensor(data, device=…)`` and kin build the tensor on the host and copy it over without dispatching
    the copy as an op; on CUDA that copy is a blocking (pageable) upload. Recorded as one, where the result is on
    the device and the data was not a tensor already."""

    def __init__(self, device: torch.device, counts: Counts) -> None:
        super().__init__()
        self.device, self.counts = device, counts

    def __torch_function__(self, func: Any, types: Any, args: tuple[Any, ...] = (),
                           kwargs: dict[str, Any] | None = None) -> Any:
        out = func(*args, **(kwargs or {}))
        if func in _FROM_DATA and isinstance(out, torch.Tensor) and out.device == self.device:
            data = args[1] if func is torch.Tensor.new_tensor else (args[0] if args else (kwargs or {}).get("data"))
            if not isinstance(data, torch.Tensor):
                self.counts.uploads.append(_place(depth=1))
        return out


class DeviceAudit(TorchDispatchMode):
    """Counts and checks every aten op dispatched on ``device`` inside ``with DeviceAudit() as counts``."""

    def __init__(self, device: torch.device = DEVICE) -> None:
        super().__init__()
        self.device = device
        self.counts = Counts()
        self._host_data = _HostData(device, self.counts)

    def __enter__(self) -> Counts:  # hands out the counts, not the mode
        self._host_data.__enter__()
        super().__enter__()
        return self.counts

    def __exit__(self, *exc: object) -> None:
        super().__exit__(*exc)
        self._host_data.__exit__(*exc)

    def __torch_dispatch__(self, func: torch._ops.OpOverload, types: Any, args: tuple[Any, ...] = (),
                           kwargs: dict[str, Any] | None = None) -> Any:
        kwargs = kwargs or {}
        c = self.counts
        c.ops += 1
        inputs = _tensors((args, kwargs))
        on_device = [t.device == self.device for t in inputs]
        name = str(func)
        if any(t.dtype == torch.float64 for t in inputs):
            c.violations.append(f"float64 input to {name} at {_place()}")

        if func is _ATEN._local_scalar_dense.default and all(on_device):  # .item(), bool(), float(): a sync
            c.syncs.append(_place())
            return True if inputs[0].dtype == torch.bool else 0
        if func in (_ATEN._to_copy.default, _ATEN.copy_.default):
            target = kwargs.get("device") if func is _ATEN._to_copy.default else args[0].device
            source = args[0].device if func is _ATEN._to_copy.default else args[1].device
            target = source if target is None else torch.device(target)
            if source == self.device and target.type == "cpu":  # .cpu(), .tolist(), a host copy: a sync …
                queued = func is _ATEN.copy_.default and (args[2] if len(args) > 2 else kwargs.get("non_blocking"))
                (c.downloads if queued else c.syncs).append(_place())  # … unless queued (into pinned memory)
                if func is _ATEN.copy_.default:
                    return args[0].zero_()
                return torch.zeros(args[0].shape, dtype=kwargs.get("dtype") or args[0].dtype)
            if source.type == "cpu" and target == self.device:
                c.uploads.append(_place())
                return func(*args, **kwargs)

        out = func(*args, **kwargs)
        outputs = _tensors(out)
        if any(t.dtype == torch.float64 for t in outputs):
            c.violations.append(f"float64 output of {name} at {_place()}")
        devices = {t.device for t in inputs + outputs}
        if devices == {torch.device("cpu")}:
            c.host[_place()] += 1
        elif devices - {self.device}:
            c.violations.append(f"{name} mixes devices {sorted(map(str, devices))} at {_place()}")
        elif not (func.is_view or func in _METADATA or func in _ALLOCATIONS):
            c.kernels += 1
            c.by_op[name] += 1
            c.bytes += _written_bytes(func, args, kwargs, out)
        return out


def undeclared(counts: Counts) -> list[str]:
    """The violations, plus host work, uploads and syncs at places not declared above."""
    problems = list(counts.violations)
    for what, places, declared in (("sync", counts.syncs, DECLARED_SYNCS),
                                   ("upload", counts.uploads, DECLARED_UPLOADS | KNOWN_UPLOADS)):
        problems += [f"undeclared {what}: {p}" for p in places if not _declared(p, declared)]
    problems += [f"undeclared host op: {p} ×{n}" for p, n in counts.host.items() if not _declared(p, DECLARED_HOST)]
    return problems


@pytest.fixture
def cuda_like_foreach(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """AdamW and clip_grad_norm_ take their foreach (multi-tensor) kernels on ``meta`` as they do on CUDA."""
    utils, optim = (importlib.import_module(m) for m in ("torch.utils._foreach_utils", "torch.optim.optimizer"))
    supported = utils._get_foreach_kernels_supported_devices

    def with_meta() -> list[str]:
        return [*supported(), "meta"]

    for module in (utils, optim):  # optim imported the function by name
        monkeypatch.setattr(module, "_get_foreach_kernels_supported_devices", with_meta)
    fused = optim._get_fused_kernels_supported_devices  # MetaLearner takes AdamW's fused kernel there, as on CUDA
    monkeypatch.setattr(optim, "_get_fused_kernels_supported_devices", lambda: [*fused(), "meta"])
    yield


def _paper() -> tuple[EngineConfig, int, int]:
    """The paper preset, and the planner's meta micro-batch and fit batch for an 80 GiB GPU."""
    cfg = get_preset(PRESET)
    plan = plan_memory(cfg, SPATIAL, budget=MemoryBudget(int(CUDA_SHARE * GPU_BYTES), "80 GiB GPU"),
                       device="cuda", in_use=0)
    return cfg, plan.micro_batch, plan.fit_batch


def _report(label: str, counts: Counts) -> None:
    print(f"\n{label}: {counts.summary()}")


def test_meta_iteration_on_the_meta_device(cuda_like_foreach: None) -> None:
    cfg, micro_batch, _ = _paper()
    B = cfg.meta.batch_size
    assert (B, micro_batch) == (24, 24)  # the whole paper batch at once on a GPU
    learner = MetaLearner(cfg.field, cfg.meta, execution=Execution(DEVICE), seed=0)
    signals = torch.zeros(B, cfg.field.out_dims, *SPATIAL, dtype=torch.uint8)  # host bytes, as a build gathers them
    with DeviceAudit() as first:
        learner.step(signals, micro_batch=micro_batch)
    with DeviceAudit() as counts:
        stats = learner.step(signals, micro_batch=micro_batch)
    _report("meta-iteration", counts)
    assert set(stats) == {"loss", "psnr", "psnr_inner", "grad_norm", "lr"}  # names only: nothing read yet
    assert stats.tensor.device == DEVICE and not counts.syncs
    assert all(p.device == DEVICE and p.dtype == torch.float32 for p in learner.params.values())
    for audit in (first, counts):
        assert not undeclared(audit), "\n".join(undeclared(audit))
    assert counts.kernels <= META_KERNELS_CEILING, counts.summary()
    assert counts.ops <= META_OPS_CEILING, counts.summary()
    assert counts.bytes <= META_BYTES_CEILING, counts.summary()
    assert len(counts.syncs) <= META_SYNCS_CEILING, counts.summary()
    assert len(counts.uploads) <= META_UPLOADS_CEILING, counts.summary()


def _fit(cfg: EngineConfig, batch: int, steps: int) -> Counts:
    fit = dataclasses.replace(cfg.fit, batch_size=batch, steps=steps)
    params = nf.init_params(cfg.field, generator=torch.Generator().manual_seed(0), device=DEVICE)
    signals = torch.zeros(batch, cfg.field.out_dims, *SPATIAL, dtype=torch.uint8)
    with DeviceAudit() as counts:
        result = fit_latents(params, signals, cfg.field, fit, execution=Execution(DEVICE))
    assert result.latents.shape == (batch, cfg.field.latent_dim) and result.kernel == "eager"
    return counts


def test_fit_batch_on_the_meta_device() -> None:
    cfg, _, fit_batch = _paper()
    assert cfg.fit.steps == 20 and cfg.fit.grad_rescale and fit_batch > 100
    counts = _fit(cfg, fit_batch, cfg.fit.steps)
    fixed = _fit(cfg, fit_batch, 0)  # the batch without its SGD steps: per step = the difference / H
    step_kernels = (counts.kernels - fixed.kernels) / cfg.fit.steps
    step_bytes = (counts.bytes - fixed.bytes) / cfg.fit.steps / fit_batch  # per signal
    _report(f"fit batch of {fit_batch}, H = {cfg.fit.steps}", counts)
    print(f"fit: {counts.bytes / fit_batch / 1e9:.3f} GB written per signal; fit step: {step_kernels:g} kernels, "
          f"{step_bytes / 1e6:.1f} MB written per signal; the batch without steps: {fixed.summary()}")
    for audit in (counts, fixed):
        assert not undeclared(audit), "\n".join(undeclared(audit))
    assert step_kernels == math.floor(step_kernels), "every SGD step of a fit should dispatch the same ops"
    assert counts.kernels <= FIT_KERNELS_CEILING, counts.summary()
    assert counts.ops <= FIT_OPS_CEILING, counts.summary()
    assert counts.bytes / fit_batch <= FIT_BYTES_PER_SIGNAL_CEILING, counts.summary()
    assert step_kernels <= FIT_STEP_KERNELS_CEILING and step_bytes <= FIT_STEP_BYTES_PER_SIGNAL_CEILING
    assert len(counts.syncs) <= FIT_SYNCS_CEILING, counts.summary()
    assert len(counts.uploads) <= FIT_UPLOADS_CEILING, counts.summary()


def test_the_audit_sees_leaks() -> None:
    """The audit itself: a host-made index, a float64 promotion and an .item() are each caught."""
    x = torch.zeros(4, device=DEVICE)
    with DeviceAudit() as counts:
        index = torch.arange(2)  # no device=: made on the host …
        y = x[index.to(DEVICE)]  # … and uploaded
        y = y * torch.tensor([1.0, 2.0], device=DEVICE)  # host data, uploaded without a dispatched copy
        y.double().sum().item()
    assert len(counts.syncs) == 1 and len(counts.uploads) == 2 and sum(counts.host.values()) == 1
    problems = undeclared(counts)
    assert any("float64" in p for p in problems) and any("upload" in p for p in problems)
    assert any("sync" in p for p in problems) and any("host op" in p for p in problems)
