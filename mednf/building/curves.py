"""Training curves of a build: ``training.csv`` (one row per meta-iteration, one per validation) and its
plot ``training.png``.

The CSV is appended to during meta-training (``.partial/training.csv``, one flushed line per row). A
resumed run first drops every row after the checkpoint it resumes from, so the finished file holds each
iteration exactly once, whatever was killed when. Columns (empty where a row kind has no value):

    kind        "train" | "val"
    iteration   meta-iterations done (1..steps)
    loss        meta-loss of the batch (mean full-context MSE after G inner steps)
    train_psnr  PSNR of the batch after G inner steps (dB)
    inner_psnr  PSNR on the last inner step's context (dB)
    grad_norm   meta-gradient norm before clipping
    lr          outer learning rate of the step
    seconds     wall time of the row (the iteration, or the validation fit)
    val_psnr    mean PSNR of the fixed validation subset after the test-time fit (dB)
    val_ssim    its mean SSIM (empty where SSIM is undefined: 1D, sides < 11)

The plot uses matplotlib (Agg backend: no display needed), the standard for such figures.
:class:`TensorBoardLog` mirrors the same scalars into a TensorBoard log (``torch.utils.tensorboard``, which
needs the optional ``tensorboard`` package: :func:`check_tensorboard` says so in one line before a build).
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from types import ModuleType

import numpy as np

from mednf.io.files import atomic_write_bytes
from mednf.optional import MissingDependencyError, optional_import

COLUMNS = ("kind", "iteration", "loss", "train_psnr", "inner_psnr", "grad_norm", "lr", "seconds", "val_psnr",
           "val_ssim")


def _cell(value: float | None) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    return str(value) if isinstance(value, int) else f"{value:.6g}"


class TrainingLog:
    """Appends rows to ``path``; :meth:`resume` first cuts it back to a checkpoint's iteration."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: io.TextIOWrapper | None = None

    def resume(self, iteration: int) -> None:
        """Keep only complete rows of iterations ≤ ``iteration`` (0: start empty), then open for appending."""
        kept = [",".join(COLUMNS)]
        if iteration > 0 and self.path.is_file():
            text = self.path.read_text(encoding="utf-8")
            lines = text.split("\n")[1:-1]  # no header; the last piece is "" or a torn line
            for line in lines:
                parts = line.split(",")
                if len(parts) == len(COLUMNS) and parts[1].isdigit() and int(parts[1]) <= iteration:
                    kept.append(line)
        atomic_write_bytes(self.path, ("\n".join(kept) + "\n").encode("utf-8"))
        self._file = self.path.open("a", encoding="utf-8")

    def _write(self, values: dict[str, float | int | str | None]) -> None:
        assert self._file is not None, "resume() opens the log"
        self._file.write(",".join(values[c] if isinstance(values.get(c), str) else _cell(values.get(c))
                                  for c in COLUMNS) + "\n")
        self._file.flush()

    def train(self, iteration: int, stats: dict[str, float], seconds: float) -> None:
        """Append one meta-iteration's row (the stats of :meth:`mednf.engine.meta.MetaLearner.step`)."""
        self._write({"kind": "train", "iteration": iteration, "loss": stats["loss"], "train_psnr": stats["psnr"],
                     "inner_psnr": stats["psnr_inner"], "grad_norm": stats["grad_norm"], "lr": stats["lr"],
                     "seconds": seconds})

    def val(self, iteration: int, psnr: float, ssim: float, seconds: float) -> None:
        """Append one validation's row: PSNR (dB) and SSIM at ``iteration``."""
        self._write({"kind": "val", "iteration": iteration, "val_psnr": psnr, "val_ssim": ssim, "seconds": seconds})

    def close(self) -> None:
        """Close the file (a later :meth:`resume` opens it again)."""
        if self._file is not None:
            self._file.close()
            self._file = None


def read_training(path: Path) -> list[dict[str, str]]:
    """The rows of a ``training.csv`` as dicts of strings (empty string = no value)."""
    with path.open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def plot_training(csv_path: Path, png_path: Path, *, title: str, best_step: int) -> None:
    """``training.png``: meta-loss (log scale) on the left, train and validation PSNR on the right, the best
    validation marked. Written atomically."""
    optional_import("matplotlib", "training.png").use("Agg", force=False)
    plt = optional_import("matplotlib.pyplot", "training.png")
    rows = read_training(csv_path)
    train = [r for r in rows if r["kind"] == "train"]
    val = [r for r in rows if r["kind"] == "val" and r["val_psnr"]]
    fig, (ax_loss, ax_psnr) = plt.subplots(1, 2, figsize=(9, 3.4), dpi=100)
    steps = [int(r["iteration"]) for r in train]
    ax_loss.plot(steps, [float(r["loss"]) for r in train], lw=0.8, color="tab:blue")
    ax_loss.set_yscale("log")
    ax_loss.set(xlabel="meta-iteration", ylabel="meta-loss (MSE)", title="loss")
    ax_psnr.plot(steps, [float(r["train_psnr"]) for r in train], lw=0.8, color="tab:blue", alpha=0.6,
                 label="train batch (after G steps)")
    if val:
        ax_psnr.plot([int(r["iteration"]) for r in val], [float(r["val_psnr"]) for r in val], "o-", ms=4,
                     color="tab:orange", label="validation (after H steps)")
        best = [r for r in val if int(r["iteration"]) == best_step]
        if best:
            ax_psnr.plot([best_step], [float(best[0]["val_psnr"])], "*", ms=14, color="tab:red",
                         label=f"best: {float(best[0]['val_psnr']):.2f} dB at {best_step}")
    ax_psnr.set(xlabel="meta-iteration", ylabel="PSNR (dB)", title="PSNR")
    ax_psnr.legend(fontsize=8, loc="lower right")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    atomic_write_bytes(png_path, buffer.getvalue())


def check_tensorboard() -> None:
    """ConfigError unless ``torch.utils.tensorboard`` can be imported (it needs the tensorboard package)."""
    _tensorboard()


def _tensorboard() -> ModuleType:
    """``torch.utils.tensorboard``, or a one-line ConfigError naming the package it needs."""
    try:
        return optional_import("torch.utils.tensorboard", "--tensorboard")
    except MissingDependencyError:  # the message would name torch, which is installed
        raise MissingDependencyError("--tensorboard needs the tensorboard package, which is not installed: pip "
                                     "install tensorboard (or drop --tensorboard; training.csv has the same "
                                     "numbers)") from None


class TensorBoardLog:
    """The rows of :class:`TrainingLog` as TensorBoard scalars (``train/*``, ``val/*``) and, at each validation,
    an image of the first validation inputs (top) over their reconstructions (bottom)."""

    def __init__(self, folder: Path) -> None:
        self._writer = _tensorboard().SummaryWriter(log_dir=str(folder))

    def train(self, iteration: int, stats: dict[str, float]) -> None:
        """Add one meta-iteration's stats as ``train/*`` scalars."""
        for key, name in (("loss", "loss"), ("psnr", "psnr"), ("psnr_inner", "inner_psnr"), ("grad_norm", "grad_norm"),
                          ("lr", "lr")):
            self._writer.add_scalar(f"train/{name}", stats[key], iteration)

    def val(self, iteration: int, psnr: float, ssim: float, inputs: np.ndarray, recon: np.ndarray | None) -> None:
        """``inputs`` / ``recon``: ``[n, D, *spatial]`` in [0, 1] (volumes: the middle slice is shown)."""
        self._writer.add_scalar("val/psnr", psnr, iteration)
        if math.isfinite(ssim):
            self._writer.add_scalar("val/ssim", ssim, iteration)
        if recon is not None and recon.ndim >= 4:
            self._writer.add_image("val/inputs_over_reconstructions", _grid(inputs[: len(recon)], recon), iteration)
        self._writer.flush()

    def close(self) -> None:
        """Flush and close the event file."""
        self._writer.close()


def _grid(inputs: np.ndarray, recon: np.ndarray) -> np.ndarray:
    """``[n, D, *spatial]`` × 2 → one ``[3, 2·H, n·W]`` image: inputs on top, reconstructions below."""
    def row(x: np.ndarray) -> np.ndarray:
        while x.ndim > 4:  # volumes: the middle slice
            x = x[:, :, x.shape[2] // 2]
        x = np.repeat(x, 3, axis=1) if x.shape[1] == 1 else x[:, :3]
        return np.concatenate(list(np.clip(x, 0, 1)), axis=2)  # [3, H, n·W]

    return np.concatenate([row(inputs), row(recon)], axis=1).astype(np.float32)
