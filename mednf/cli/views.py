"""The commands that read a built dataset's space: ``decode`` and ``eval`` (its latents back to images),
``classify`` (on its latents), ``encode`` and ``inpaint`` (new images fitted into it)."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import click
import numpy as np

from mednf.cli.errors import GuardedCommand
from mednf.cli.info import baselines_text
from mednf.cli.options import check_folder, gpu_option, medmnist_root_option, root_option, threads_option
from mednf.cli.output import Printer, printing_options
from mednf.engine.device import resolve_device
from mednf.errors import ConfigError
from mednf.figures import dataset_samples, figure_class, save_figure
from mednf.format.layout import check_outside_datasets
from mednf.format.manifest import Manifest
from mednf.format.splits import check_split
from mednf.io.files import atomic_write_bytes
from mednf.loading import find_dataset, load
from mednf.tasks.classify import classify as run_classify
from mednf.tasks.encode import encode as run_encode
from mednf.tasks.encode import read_images_npz
from mednf.tasks.evaluate import evaluate, save_error_grid, write_report
from mednf.tasks.inpaint import inpaint as run_inpaint


def _write_atomically(path: Path, save: Callable[[BinaryIO], None]) -> None:
    """Write what ``save`` writes to a file object to ``path`` at once (a reader never sees half a file)."""
    buffer = io.BytesIO()
    save(buffer)
    atomic_write_bytes(path, buffer.getvalue())


MAX_GRID = 64  # samples in one PNG grid: more makes a picture nobody can read


def _parse_indices(text: str, n: int, printer: Printer) -> list[int]:
    """``0:16``, ``3``, ``1,5,9`` or ``-4:`` → positions (checked against ``n``; a range past the split's end
    is cut to it, and says so)."""
    try:
        if ":" in text:
            parts = [int(p) if p else None for p in text.split(":")]
            positions = list(range(n))[slice(*parts)]
            if not positions:
                raise ValueError
            if len(parts) >= 2 and parts[1] is not None and parts[1] > n:
                printer.note(f"note: --indices {text} runs past the split's {n} samples; decoding {len(positions)}")
            return positions
        positions = [int(p) for p in text.split(",")]
    except (ValueError, TypeError):
        raise ConfigError(f"--indices {text!r} is invalid: expected START:STOP (non-empty, split of {n}), a number, "
                          "or a comma list") from None
    bad = [p for p in positions if not -n <= p < n]
    if bad:
        raise ConfigError(f"--indices {bad} are out of range: the split has {n} samples (0..{n - 1})")
    return [p % n for p in positions]


@click.command(cls=GuardedCommand)
@click.argument("name")
@click.option("--split", default="test", show_default=True,
              help="train, val (validation) or test; rows of one as in Hugging Face: test[:10%], test[-50:].")
@click.option("--indices", default="0:16", show_default=True, help="START:STOP, N, or a comma list.")
@click.option("--size", type=int, help="Decode at this side length (default: the training resolution).")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="grid.png, or x.npy for the raw array.")
@root_option()
@medmnist_root_option("Where the source npz is, to show inputs beside reconstructions.")
@gpu_option("Decode on cuda:N.")
@threads_option
@printing_options
def decode(name: str, split: str, indices: str, size: int | None, out: Path, root: Path | None,
           medmnist_root: Path | None, gpu: int | None, printer: Printer) -> None:
    """Decode latents of NAME to a PNG grid or a .npy array.

    The grid shows the inputs beside the reconstructions when the source images are available."""
    if out.suffix.lower() not in (".png", ".npy"):
        raise ConfigError(f"--out {out} is invalid: expected a .png or .npy file name")
    check_folder("--out", out)
    if out.suffix.lower() == ".png":
        figure_class()  # no matplotlib: one line now, before anything is read
    ds = load(name, split, root=root)
    positions = _parse_indices(indices, len(ds), printer)
    if out.suffix.lower() == ".png" and len(positions) > MAX_GRID:
        raise ConfigError(f"--indices {indices} selects {len(positions)} samples: a PNG grid shows at most {MAX_GRID}; "
                          "select fewer, or write the array to a .npy file")
    if out.suffix.lower() == ".npy":
        images = ds.decode(positions, size=size, device=resolve_device(gpu))  # [n, D, *spatial]
        _write_atomically(out, lambda f: np.save(f, images.numpy()))  # never a half-written .npy under the real name
        printer.line(f"wrote {out}: array {tuple(images.shape)} float32 in [0, 1]")
        printer.result({"out": str(out), "shape": list(images.shape), "indices": positions})
        return
    samples = dataset_samples(ds, positions, size=size, root=medmnist_root, device=resolve_device(gpu))
    save_figure(samples.figure(), out)
    printer.line(f"wrote {out}: {len(positions)} reconstructions at {tuple(samples.recon.shape[2:])}"
                 + (" beside their inputs" if samples.inputs is not None else f" ({samples.note})"))
    printer.result({"out": str(out), "shape": list(samples.recon.shape), "indices": positions,
                    "inputs_shown": samples.inputs is not None})


@click.command(name="eval", cls=GuardedCommand)
@click.argument("name")
@click.option("--split", default="test", show_default=True, help="A split, or 'all'.")
@click.option("--out", type=click.Path(path_type=Path), help="Folder for summary.json and samples.parquet "
              "[default: ./<Name>-eval].")
@click.option("--plot", type=click.Path(path_type=Path), help="PNG: inputs, reconstructions, |error| maps.")
@root_option()
@medmnist_root_option("Where the source npz is [default: $MEDMNIST_ROOT or ~/.medmnist].")
@gpu_option("Decode on cuda:N.")
@threads_option
@printing_options
def eval_(name: str, split: str, out: Path | None, plot: Path | None, root: Path | None,
          medmnist_root: Path | None, gpu: int | None, printer: Printer) -> None:
    """Compare NAME's decoded latents with the source images.

    MSE, PSNR and SSIM per split and per sample."""
    if plot is not None:
        check_folder("--plot", plot)
    if out is not None:
        check_outside_datasets(out, "--out")
    if out is not None and out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is invalid: it is a file, expected a folder for summary.json and "
                          "samples.parquet; choose another path")
    path = find_dataset(name, root)
    manifest = Manifest.read(path)
    splits = None if split == "all" else [check_split(split, [*manifest.splits, "all"], "--split")]
    device = resolve_device(gpu)
    report = evaluate(path, splits, medmnist_root=medmnist_root, device=device, progress=printer.progress)
    folder = write_report(report, out or Path(f"{manifest.name}-eval"))
    printer.line(f"{report.name}: decoded vs source images ({report.seconds:.1f} s on {report.device})")
    for s, summary in report.summary()["splits"].items():
        stored = summary["stored_psnr_mean"]
        ssim = f"{summary['ssim_mean']:.4f}" if summary["ssim_mean"] is not None else "—"
        printer.line(f"  {s:5s} {summary['count']:7d}  MSE {summary['mse_mean']:.5f}  "
                     f"PSNR {summary['psnr_mean']:.2f} ± {summary['psnr_std']:.2f} dB  SSIM {ssim}"
                     + (f"  (recorded at build: {stored:.2f} dB)" if stored is not None else "")
                     + baselines_text(summary["baselines"]))
    printer.line(f"wrote {folder / 'summary.json'} and {folder / 'samples.parquet'}")
    if plot is not None:
        save_error_grid(path, plot, split=splits[0] if splits else "test", medmnist_root=medmnist_root, device=device)
        printer.line(f"wrote {plot}: inputs, reconstructions, |error| (rows)")
    printer.result({**report.summary(), "out": str(folder), "plot": str(plot) if plot is not None else None})


@click.command(cls=GuardedCommand)
@click.argument("name")
@click.option("--model", "model", type=click.Choice(["knn", "mlp", "all"]), default="all", show_default=True,
              help="k-NN (k = 1, 3), the paper's MLP, or both.")
@click.option("--features", type=click.Choice(["latents", "pixels", "both"]), default="both", show_default=True,
              help="Latents, the raw-pixel baseline, or both in one table.")
@click.option("--epochs", type=click.IntRange(min=1), default=50, show_default=True, help="MLP epochs.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the MLP's initialisation and batches.")
@click.option("--out", "json_out", type=click.Path(path_type=Path), help="Also write the report to this .json file.")
@root_option()
@medmnist_root_option("Where the source npz is (pixel baseline).")
@gpu_option("Train the MLP on cuda:N.")
@threads_option
@printing_options
def classify(name: str, model: str, features: str, epochs: int, seed: int, json_out: Path | None,
             root: Path | None, medmnist_root: Path | None, gpu: int | None, printer: Printer) -> None:
    """Classify NAME's latents beside its raw pixels.

    k-NN (k = 1, 3) and the paper's MLP, on the latents and on the source pixels (Table 4)."""
    if json_out is not None:
        check_folder("--out", json_out)
    models = ("knn", "mlp") if model == "all" else (model,)
    feats = ("latents", "pixels") if features == "both" else (features,)
    report = run_classify(name, models, features=feats, root=root, medmnist_root=medmnist_root, epochs=epochs,
                          seed=seed, device=resolve_device(gpu), progress=printer.progress)
    printer.line(report.to_markdown())
    if json_out is not None:
        atomic_write_bytes(json_out, (json.dumps(report.to_dict(), indent=2) + "\n").encode("utf-8"))
        printer.line(f"wrote {json_out}")
    printer.result({**report.to_dict(), "out": str(json_out) if json_out is not None else None})


@click.command(cls=GuardedCommand)
@click.argument("name")
@click.argument("images", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), required=True, help="latents.npz (latents, psnr, ssim).")
@click.option("--key", help="Array of IMAGES to encode [default: images, test_images, or the only one].")
@click.option("--resample", is_flag=True, help="Resize images of another size to the space's resolution.")
@click.option("--mask", "mask_path", type=click.Path(path_type=Path),
              help="An .npz with a bool/0-1 array 'mask' [N, *size] or [*size]: fit only the observed (True) pixels.")
@root_option()
@gpu_option("Fit on cuda:N.")
@threads_option
@printing_options
def encode(name: str, images: Path, out: Path, key: str | None, resample: bool, mask_path: Path | None,
           root: Path | None, gpu: int | None, printer: Printer) -> None:
    """Fit latents for the images of an .npz into NAME.

    The images are fitted with NAME's θ and test-time fit settings."""
    check_folder("--out", out)
    mask = None if mask_path is None else read_images_npz(mask_path, names=("mask",))
    result = run_encode(read_images_npz(images, key), name, mask=mask, resample=resample, root=root,
                        device=resolve_device(gpu), progress=printer.progress)
    _write_atomically(out, lambda f: np.savez(f, latents=result.latents, psnr=result.psnr, ssim=result.ssim))
    where = " on the observed pixels" if mask is not None else ""
    printer.line(f"wrote {out}: {len(result.latents)} latents of P={result.latents.shape[1]} in the {result.space} "
                 f"space, PSNR{where} {result.psnr.mean():.2f} ± {result.psnr.std():.2f} dB")
    printer.result({"out": str(out), "count": len(result.latents), "latent_dim": int(result.latents.shape[1]),
                    "space": result.space, "masked": mask is not None, "psnr_mean": float(result.psnr.mean()),
                    "psnr_std": float(result.psnr.std())})


@click.command(cls=GuardedCommand)
@click.argument("name")
@click.argument("images", type=click.Path(path_type=Path))
@click.option("--mask", "mask_path", type=click.Path(path_type=Path), required=True,
              help="An .npz with a bool/0-1 array 'mask' [N, *size] or [*size], True = observed pixel.")
@click.option("--out", type=click.Path(path_type=Path), required=True,
              help="recon.npz: recon [N, C, *size] float32 in [0, 1], latents, psnr_observed.")
@click.option("--key", help="Array of IMAGES [default: images, test_images, or the only one].")
@click.option("--size", type=int, default=None, help="Side length of the output grid [default: the space's].")
@root_option()
@gpu_option("Fit on cuda:N.")
@threads_option
@printing_options
def inpaint(name: str, images: Path, mask_path: Path, out: Path, key: str | None, size: int | None,
            root: Path | None, gpu: int | None, printer: Printer) -> None:
    """Fill the unobserved pixels of IMAGES in NAME's space.

    Each image is fitted to its observed pixels and decoded whole (a --size above the space's resolution
    gives super-resolution)."""
    check_folder("--out", out)
    mask = read_images_npz(mask_path, names=("mask",))
    result = run_inpaint(read_images_npz(images, key), mask, name, size=size, root=root, device=resolve_device(gpu),
                         progress=printer.progress)
    _write_atomically(out, lambda f: np.savez(f, recon=result.recon, latents=result.latents,
                                              psnr_observed=result.psnr_observed))
    printer.line(f"wrote {out}: {len(result.recon)} reconstructions of {'×'.join(map(str, result.recon.shape[2:]))} "
                 f"in the {result.space} space, PSNR on the observed pixels {result.psnr_observed.mean():.2f} ± "
                 f"{result.psnr_observed.std():.2f} dB")
    printer.result({"out": str(out), "count": len(result.recon), "shape": list(result.recon.shape),
                    "space": result.space, "psnr_observed_mean": float(result.psnr_observed.mean()),
                    "psnr_observed_std": float(result.psnr_observed.std())})
