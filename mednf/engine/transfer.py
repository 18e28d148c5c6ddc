"""Host ↔ device copies that do not make the host wait for the GPU.

On CUDA a copy from ordinary (pageable) host memory, or into it, waits for the stream; from or into *pinned*
memory it is queued like a kernel and the host goes on. The hot loops therefore upload batches with
:func:`upload` and collect results into :func:`host_buffer` rows with :func:`download_into`, then call
:func:`wait` once where the host reads them. On the CPU (and on PyTorch's ``meta`` device) these are the
plain copies: nothing is pinned and nothing waits.

Pinned buffers come from torch's caching host allocator, which records the copies queued from a buffer and
does not hand it out again before they are done, so a fresh pinned tensor per batch is safe and cheap.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _pins(device: torch.device) -> bool:
    return device.type == "cuda"


def upload(tensor: Tensor, device: torch.device) -> Tensor:
    """``tensor`` on ``device``: from pinned memory without waiting on CUDA, a plain ``.to`` elsewhere."""
    if not _pins(device) or tensor.device.type != "cpu":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)


def host_buffer(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device, *, fill: float | None = None
                ) -> Tensor:
    """A host tensor to collect results from ``device`` in (pinned on CUDA); read it after :func:`wait`."""
    buffer = torch.empty(shape, dtype=dtype, pin_memory=_pins(device))
    return buffer if fill is None else buffer.fill_(fill)


def download_into(rows: Tensor, values: Tensor) -> None:
    """Copy ``values`` (on the device) into ``rows`` of a :func:`host_buffer`, queued on CUDA."""
    rows.copy_(values, non_blocking=values.device.type != "cpu")  # into pinned rows on CUDA: queued


def wait(device: torch.device) -> None:
    """Wait until what was queued on ``device`` (copies included) is done; nothing to wait for elsewhere."""
    if _pins(device):
        torch.cuda.current_stream(device).synchronize()
