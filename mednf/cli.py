"""The ``mednf`` command line (click). User mistakes and environment faults (a missing folder, a full disk,
too little memory) print one line ``error: …`` and exit with status 2, no traceback; ``MEDNF_DEBUG=1``
shows the traceback instead."""

from __future__ import annotations

import errno
import functools
import logging
import os
import re
import shutil
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from mednf.errors import ConfigError, MednfError

_OS_FIXES = {
    errno.ENOENT: "check that the path and its folder exist",
    errno.EEXIST: "something is in the way at that path; move it or choose another path",
    errno.ENOTDIR: "a part of the path is a file, not a folder; check the path",
    errno.EISDIR: "the path is a folder; give a file name",
    errno.EACCES: "check its permissions, or choose another path",
    errno.EPERM: "check its permissions, or choose another path",
    errno.EROFS: "the file system is read-only; choose another path",
    errno.EMFILE: "too many open files; raise the limit (ulimit -n) and rerun",
    errno.ENAMETOOLONG: "a name in the path is too long; use a shorter one",
    errno.EIO: "the device reported an I/O error; check the disk",
}
_MEMORY_FIXES = {
    "build": "lower --batch-size or --set fit.memory_budget_mb=…, or build on a machine with more memory",
    "decode": "decode fewer --indices or at a smaller --size",
    "encode": "encode fewer images at a time",
}


def _debug() -> bool:
    return os.environ.get("MEDNF_DEBUG", "") not in ("", "0")


def _mib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def _build_dir(ctx: click.Context) -> Path | None:
    """The output directory of ``mednf build`` (its --out, else $MEDNF_HOME/<Name>), if it can be told."""
    if ctx.info_name != "build":
        return None
    if ctx.params.get("out") is not None:
        return Path(ctx.params["out"]).expanduser()
    try:
        from mednf.format.layout import mednf_home
        from mednf.sources.spec import load_builder

        return mednf_home() / load_builder(ctx.params["name"]).name
    except (MednfError, OSError):
        return None


def _free_space(path: Path) -> str:
    for folder in (path, *path.parents):
        if folder.is_dir():
            try:
                return f"{_mib(shutil.disk_usage(folder).free)} free"
            except OSError:
                return "free space unknown"
    return "free space unknown"


def _os_error_line(err: OSError, ctx: click.Context, build_dir: Path | None) -> str:
    command = f"mednf {ctx.info_name}"
    path = err.filename or build_dir or ctx.params.get("out")
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        where = Path(path) if path is not None else Path.cwd()
        needed = getattr(err, "needed_bytes", None)  # set by code that knows how much it tried to write
        amount = (f"needs {_mib(needed)}, " if isinstance(needed, int) else "") + _free_space(where)
        if build_dir is not None:
            return (f"no space left on the device of {where} ({amount}); free some space and rerun the same "
                    f"command: the build resumes where it stopped{_log_pointer(build_dir)}")
        return f"{command}: no space left on the device of {where} ({amount}); free some space or write elsewhere"
    reason = f"{err.strerror or err}" + (f" [{errno.errorcode[err.errno]}]" if err.errno in errno.errorcode else "")
    if path is not None and err.filename2:
        path = f"{path} → {err.filename2}"
    line = f"{command} failed" + (f" on {path}" if path is not None else "") + f": {reason}"
    line += f"; {_OS_FIXES.get(err.errno or 0, 'check the path and the disk')}"
    return line + _log_pointer(build_dir)


def _log_pointer(build_dir: Path | None) -> str:
    log = build_dir / "build.log" if build_dir is not None else None
    return f" (traceback in {log})" if log is not None and log.is_file() else ""


def _out_of_memory(err: BaseException) -> bool:
    """A MemoryError, or torch's way of saying the same (CPU allocator failure, CUDA out of memory)."""
    if isinstance(err, MemoryError):
        return True
    text = str(err)
    return isinstance(err, RuntimeError) and (type(err).__name__ == "OutOfMemoryError" or "can't allocate memory"
                                              in text or "CUDA out of memory" in text)


def _error_line(err: BaseException, ctx: click.Context, build_dir: Path | None) -> str | None:
    """The one line for ``err``, or None when it is not a user mistake or environment fault (a bug)."""
    if isinstance(err, MednfError):
        return str(err)
    if isinstance(err, OSError):
        return None if err.errno == errno.EPIPE else _os_error_line(err, ctx, build_dir)  # EPIPE: click's
    if _out_of_memory(err):
        tried = re.search(r"tried to allocate (\d+) bytes", str(err))
        amount = f"it tried to allocate {_mib(int(tried.group(1)))}" if tried else "not enough memory"
        fix = _MEMORY_FIXES.get(ctx.info_name or "", "use a machine with more memory")
        return f"mednf {ctx.info_name} ran out of memory ({amount}); {fix}"
    if isinstance(err, EOFError):
        return (f"mednf {ctx.info_name} read a file that ends too early ({str(err) or 'EOFError'}); check that the files "
                "you gave are complete")
    return None


def _log_traceback(build_dir: Path | None) -> None:
    """Append the traceback to an existing ``build.log`` (the one line points there)."""
    if build_dir is None or not (build_dir / "build.log").is_file():
        return
    try:
        with open(build_dir / "build.log", "a", encoding="utf-8") as log:
            log.write(traceback.format_exc())
    except OSError:
        pass  # e.g. the disk is full: the line on the console is all there is


class _GuardedCommand(click.Command):
    """A command whose user mistakes and environment faults end in one line and exit status 2."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (MednfError, OSError, MemoryError, EOFError, RuntimeError) as err:
            build_dir = _build_dir(ctx) if not isinstance(err, MednfError) else None
            line = _error_line(err, ctx, build_dir)
            if line is None or _debug():
                raise
            _log_traceback(build_dir)
            click.echo(f"error: {line}", err=True)
            sys.exit(2)


class _Group(click.Group):
    command_class = _GuardedCommand


def _check_folder(option: str, path: Path) -> None:
    """Refuse an output file whose folder does not exist, before any work is done."""
    folder = path.expanduser().parent
    if path.expanduser().is_dir():
        raise ConfigError(f"{option} {path} is invalid: it is a folder, expected a file name; name a file in it")
    if not folder.is_dir():
        state = "is not a folder" if folder.exists() else "does not exist"
        raise ConfigError(f"{option} {path} is invalid: its folder {folder} {state}; create it or choose another path")


def parse_threads(value: str | None) -> int | None:
    """``--threads`` text → a thread count ≥ 1 (None: not given); a one-line ConfigError otherwise."""
    if value is None:
        return None
    text = str(value).strip()
    if not text.isdigit() or int(text) < 1:
        raise ConfigError(f"--threads {value!r} is invalid: expected a whole number ≥ 1 of CPU threads, e.g. "
                          f"--threads {os.cpu_count() or 4}")
    threads = int(text)
    return threads


def set_threads(threads: int) -> None:
    """Let torch use ``threads`` CPU threads for its operations (and as many for inter-op work, when torch
    still allows setting that: only before its first parallel work in the process)."""
    import torch

    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(threads)
    except RuntimeError:
        pass  # parallel work already ran in this process (e.g. an earlier command in the same interpreter)


def threads_option(command: Callable[..., Any]) -> Callable[..., Any]:
    """``--threads N`` for a command that computes: checked and applied (:func:`set_threads`) before the
    command's own body runs; a bad N is one line and exit status 2 like every other user mistake."""

    @functools.wraps(command)
    def run(*args: Any, threads: str | None = None, **kwargs: Any) -> Any:
        count = parse_threads(threads)
        if count is not None:
            set_threads(count)
        return command(*args, **kwargs)

    return click.option("--threads", metavar="N", default=None,
                        help="CPU threads for torch (torch.set_num_threads) [default: torch's, all cores].")(run)


@click.group(cls=_Group)
@click.version_option(package_name="mednf")
def main() -> None:
    """mednf: medical datasets as neural fields (MedFuncta)."""
    logging.raiseExceptions = _debug()  # a log write failing (full disk) must not print a traceback


@main.command()
@click.option("--steps", default=300, show_default=True, type=click.IntRange(min=1), help="Meta-iterations.")
@click.option("--size", default=32, show_default=True, type=click.IntRange(min=4), help="Phantom side length.")
@click.option("--seed", default=0, show_default=True, type=int)
@threads_option
def demo(steps: int, size: int, seed: int) -> None:
    """Meta-learn and fit on generated phantoms (CPU, no download, ~1 minute)."""
    from mednf.tasks.demo import run_demo

    run_demo(steps=steps, size=size, seed=seed, log=click.echo)


@main.command()
def presets() -> None:
    """List the engine presets (the paper's configurations and mednf's CPU ones)."""
    from mednf.engine.presets import get_preset, preset_description, preset_names

    for name in preset_names():
        f = get_preset(name).field
        click.echo(
            f"{name:16s} K={f.num_layers:<3d} L={f.hidden_dim:<4d} P={f.latent_dim:<6d} "
            f"ω {f.omegas[0]:g}→{f.omegas[-1]:g}  {preset_description(name)}"
        )


def _parse_set(values: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """``--set meta.inner_steps=5`` → ``{"meta": {"inner_steps": 5}}`` (values parsed as TOML)."""
    import tomllib

    sections: dict[str, dict[str, Any]] = {}
    for item in values:
        key, sep, raw = item.partition("=")
        section, dot, name = key.strip().partition(".")
        if not sep or not dot or not name:
            raise ConfigError(f"--set {item!r} is invalid: expected SECTION.KEY=VALUE, e.g. --set meta.inner_steps=5")
        try:
            value = tomllib.loads(f"v = {raw.strip()}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw.strip()  # bare words are strings: --set field.shift_mode=outside
        sections.setdefault(section, {})[name] = value
    return sections


@main.command()
@click.argument("name")
@click.option("--out", type=click.Path(path_type=Path), help="Output directory [default: $MEDNF_HOME/<Name>].")
@click.option("--gpu", type=int, default=None, help="Build on cuda:N (default: CPU).")
@click.option("--cpu", "force_cpu", is_flag=True, help="Build on the CPU (the default).")
@click.option("--steps", type=int, help="Meta-iterations (meta.steps).")
@click.option("--batch-size", type=int, help="Meta batch size B (meta.batch_size).")
@click.option("--latent-dim", type=int, help="Latent size P (field.latent_dim).")
@click.option("--fit-steps", type=int, help="Test-time fit steps H (fit.steps).")
@click.option("--precision", help="Matrix products in fp32 (default), tf32 (CUDA) or bf16 (field.precision).")
@click.option("--size", type=int, help="MedMNIST resolution (28, 64, 128, 224); 128/224 use the paper's presets.")
@click.option("--preset", help="Engine preset instead of the builder's [engine] section (see `mednf presets`).")
@click.option("--set", "settings", multiple=True, metavar="SECTION.KEY=VALUE",
              help="Any engine or build setting, e.g. --set meta.inner_steps=5 --set build.val_every=100.")
@click.option("--medmnist-root", type=click.Path(path_type=Path), envvar="MEDMNIST_ROOT",
              help="Folder with MedMNIST npz files [env MEDMNIST_ROOT; default ~/.medmnist].")
@click.option("--source-npz", type=click.Path(path_type=Path), help="Build from this npz (MedMNIST layout) instead.")
@click.option("--max-samples", type=int, help="Use only the first N samples of each split (quick trial builds).")
@click.option("--no-download", is_flag=True, help="Fail instead of downloading a missing MedMNIST file.")
@click.option("--resume", is_flag=True, help="Continue an unfinished build (what a rerun does anyway).")
@click.option("--restart", is_flag=True, help="Discard an earlier build in the output directory and start over.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@click.option("--tensorboard", type=click.Path(path_type=Path), metavar="DIR",
              help="Also log the training curves and validation reconstructions to TensorBoard in DIR "
                   "(pip install tensorboard).")
@click.option("--continue-to", "continue_to", type=int, metavar="N",
              help="Continue a finished build's meta-training to N iterations (its own settings, the schedule "
                   "re-planned), then fit and write it again; the old dataset stays until the new one is complete.")
@click.option("--memory-budget", metavar="SIZE",
              help="Memory the build may use, e.g. 8GB or 6GiB (GB = 10^9 B, GiB = G = 2^30 B): the whole process "
                   "on the CPU, the GPU's memory with --gpu. Meta-iterations run in micro-batches that fit it "
                   "(same result). [default: 60% of available RAM / 80% of free GPU memory]")
@threads_option
def build(name: str, out: Path | None, gpu: int | None, force_cpu: bool, steps: int | None,
          batch_size: int | None, latent_dim: int | None, fit_steps: int | None, size: int | None,
          preset: str | None, settings: tuple[str, ...], medmnist_root: Path | None, source_npz: Path | None,
          max_samples: int | None, no_download: bool, resume: bool, restart: bool, quiet: bool,
          precision: str | None,
          memory_budget: str | None, continue_to: int | None, tensorboard: Path | None) -> None:
    """Build the MedNF sub-dataset NAME (a builder name, see `mednf list`, or a builder .toml file).

    Meta-learns the shared network, fits a latent for every image of every split and writes the dataset
    (manifest last). Rerunning the same command resumes an interrupted build.
    """
    from mednf.building.api import build_options
    from mednf.building.pipeline import build as run_build

    if gpu is not None and force_cpu:
        raise ConfigError("--gpu and --cpu were both given: expected one of them; drop one")
    if resume and restart:
        raise ConfigError("--resume and --restart were both given: expected one of them; drop one")
    options = build_options(out=out, gpu=gpu, steps=steps, batch_size=batch_size, latent_dim=latent_dim,
                            fit_steps=fit_steps, precision=precision, size=size, preset=preset,
                            overrides=_parse_set(settings), medmnist_root=medmnist_root, source_npz=source_npz,
                            max_samples=max_samples, download=not no_download, restart=restart,
                            continue_to=continue_to, memory_budget=memory_budget, progress=not quiet,
                            tensorboard=tensorboard)
    run_build(name, options)


@main.command(name="list")
@click.option("--root", type=click.Path(path_type=Path), help="Cache folder [default: $MEDNF_HOME].")
def list_builders(root: Path | None) -> None:
    """List the builders (modality, size, channels, task, split counts) and where each stands here: built
    (where, test PSNR), downloadable (a registered published copy) or buildable only."""
    from mednf.remote.catalogue import availability, cached_names
    from mednf.sources.kinds import kind_of
    from mednf.sources.spec import builder_names, load_builder

    click.echo(f"{'name':13s} {'modality':26s} {'size':>7s} {'ch':>3s} {'task':12s} {'train':>7s} {'val':>6s} "
               f"{'test':>6s}  preset")
    names = builder_names()
    for name in names:
        s = load_builder(name)
        size = "×".join([str(s.source.size)] * s.source.dims)
        tag = "" if s.paper else " (embedded)" if kind_of(s).embedded else " (extra)"
        click.echo(f"{s.name:13s} {s.modality[:26]:26s} {size:>7s} {s.source.channels:>3d} {s.labels.task:12s} "
                   f"{s.splits['train']:>7d} {s.splits['val']:>6d} {s.splits['test']:>6d}  {s.preset}{tag}")
        click.echo(f"{'':13s} → {availability(s.name, root).describe()}")
    shipped = {n.lower() for n in names}
    others = [n for n in cached_names(root) if n.lower() not in shipped]
    if others:
        click.echo("in the cache from other builder files:")
        for name in others:
            click.echo(f"{name:13s} → {availability(name, root).describe()}")


@main.command()
@click.argument("name")
@click.option("--root", type=click.Path(path_type=Path), help="Dataset folder [default: $MEDNF_HOME].")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def info(name: str, root: Path | None, as_json: bool) -> None:
    """Summary of a built dataset: counts, latent size, hyper-parameters, PSNR/SSIM, licence."""
    import json

    from mednf.loading import info as dataset_info

    summary = dataset_info(name, root)
    if as_json:
        click.echo(json.dumps(summary, indent=2, ensure_ascii=False))
        return
    f, m = summary["engine"]["field"], summary["engine"]["meta"]
    click.echo(f"{summary['name']}  ({summary['path']}, {summary['size_bytes'] / 2**20:.1f} MiB)")
    click.echo(f"  latent P={summary['latent_dim']}  network K={f['num_layers']} L={f['hidden_dim']} "
               f"ω {f['omega_first']:g}→{(f['omega_last'] or f['omega_first']):g}  meta {m['steps']} it, B={m['batch_size']}")
    click.echo(f"  labels: {summary['labels']['task']}, {len(summary['labels']['names'])} classes; "
               f"licence: {summary['license']}")
    for split, s in summary["splits"].items():
        ssim = f"{s['ssim_mean']:.3f}" if s["ssim_mean"] is not None else "—"
        psnr = f"{s['psnr_mean']:.2f} ± {s['psnr_std']:.2f} dB" if s["psnr_mean"] is not None else "not measured"
        click.echo(f"  {split:5s} {s['count']:7d} samples  PSNR {psnr}  SSIM {ssim}{_baselines_text(s.get('baselines'))}")
    check = summary["meta_training"].get("baseline_check") or {}
    if check.get("learns_per_sample") is False:
        click.echo(f"  warning: the best validation PSNR is not {check['margin_db']:g} dB above the mean-image "
                   f"baseline ({check['val_mean_image_psnr']:.2f} dB): the latents carry little per-sample information"
                   + ("; the inner loop diverged (rebuild with a smaller inner learning rate)"
                      if check.get("cause") == "diverging" else ""))


def _baselines_text(baselines: dict[str, float] | None) -> str:
    """``  baselines: mean image 15.2 dB, φ = 0 14.9 dB`` (empty when not recorded)."""
    if not baselines:
        return ""
    parts = [f"{label} {baselines[key]:.2f} dB" for key, label in (("mean_image_psnr", "mean image"),
                                                                    ("zero_latent_psnr", "φ = 0")) if key in baselines]
    return "  baselines: " + ", ".join(parts)


def _parse_indices(text: str, n: int) -> list[int]:
    """``0:16``, ``3``, ``1,5,9`` or ``-4:`` → positions (checked against ``n``)."""
    try:
        if ":" in text:
            parts = [int(p) if p else None for p in text.split(":")]
            positions = list(range(n))[slice(*parts)]
            if not positions:
                raise ValueError
            return positions
        positions = [int(p) for p in text.split(",")]
    except (ValueError, TypeError):
        raise ConfigError(f"--indices {text!r} is invalid: expected START:STOP (non-empty, split of {n}), a number, "
                          "or a comma list") from None
    bad = [p for p in positions if not -n <= p < n]
    if bad:
        raise ConfigError(f"--indices {bad} are out of range: the split has {n} samples (0..{n - 1})")
    return [p % n for p in positions]


@main.command()
@click.argument("name")
@click.option("--split", default="test", show_default=True)
@click.option("--indices", default="0:16", show_default=True, help="START:STOP, N, or a comma list.")
@click.option("--size", type=int, help="Decode at this side length (default: the training resolution).")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="grid.png, or x.npy for the raw array.")
@click.option("--root", type=click.Path(path_type=Path), help="Dataset folder [default: $MEDNF_HOME].")
@click.option("--medmnist-root", type=click.Path(path_type=Path), envvar="MEDMNIST_ROOT",
              help="Where the source npz is, to show inputs beside reconstructions.")
@click.option("--gpu", type=int, default=None, help="Decode on cuda:N.")
@threads_option
def decode(name: str, split: str, indices: str, size: int | None, out: Path, root: Path | None,
           medmnist_root: Path | None, gpu: int | None) -> None:
    """Decode latents of NAME to images: a PNG grid (inputs beside reconstructions when the source
    images are available) or the raw array as .npy."""
    import io

    import numpy as np

    from mednf.engine.device import resolve_device
    from mednf.io.files import atomic_write_bytes
    from mednf.loading import load
    from mednf.figures import dataset_samples, figure_class, save_figure

    if out.suffix.lower() not in (".png", ".npy"):
        raise ConfigError(f"--out {out} is invalid: expected a .png or .npy file name")
    _check_folder("--out", out)
    if out.suffix.lower() == ".png":
        figure_class()  # no matplotlib: one line now, before anything is read
    ds = load(name, split, root=root)
    positions = _parse_indices(indices, len(ds))
    if out.suffix.lower() == ".npy":
        images = ds.decode(positions, size=size, device=resolve_device(gpu))  # [n, D, *spatial]
        buffer = io.BytesIO()
        np.save(buffer, images.numpy())
        atomic_write_bytes(out, buffer.getvalue())  # never a half-written .npy under the real name
        click.echo(f"wrote {out}: array {tuple(images.shape)} float32 in [0, 1]")
        return
    samples = dataset_samples(ds, positions, size=size, root=medmnist_root, device=resolve_device(gpu))
    save_figure(samples.figure(), out)
    click.echo(f"wrote {out}: {len(positions)} reconstructions at {tuple(samples.recon.shape[2:])}"
               + (" beside their inputs" if samples.inputs is not None else f" ({samples.note})"))


@main.command()
@click.argument("name")
@click.option("--source", type=click.Choice(["zenodo", "hf"]), default="zenodo", show_default=True)
@click.option("--root", type=click.Path(path_type=Path), help="Cache folder [default: $MEDNF_HOME].")
def download(name: str, source: str, root: Path | None) -> None:
    """Download a published MedNF dataset into the cache, verified (sha256, md5, manifest). A dataset that
    is already complete in the cache (built or downloaded) is left as it is."""
    from mednf.errors import FormatError, NotFoundError
    from mednf.format.reader import verify_dataset
    from mednf.loading import find_dataset
    from mednf.remote.hf import download_hf
    from mednf.remote.registry import is_registered, registry_entry
    from mednf.remote.zenodo import download_zenodo

    key = registry_entry(name)[0] if is_registered(name) else name
    try:
        path = find_dataset(key, root)
        manifest = verify_dataset(path, checksums=True)  # remembered while unchanged: cheap after the first time
        if manifest.origin is None:  # built by mednf here, or a mednf export (which keeps its builder's manifest)
            click.echo(f"{manifest.name} is already in {path}, complete and verified (built by mednf): nothing "
                       "downloaded; use another --root to download the published copy")
        else:
            click.echo(f"{manifest.name} is already in {path}, complete and verified (a download or import): "
                       "nothing downloaded")
        return
    except NotFoundError:
        pass
    except FormatError as err:
        if not is_registered(name):
            raise
        click.echo(f"the copy in the cache does not verify ({err}); downloading it again", err=True)
    key, _ = registry_entry(name)  # not registered: the one line saying so and how to build it
    path = (download_hf if source == "hf" else download_zenodo)(key, root=root)
    click.echo(f"downloaded and verified {key} into {path}")


@main.command()
@click.argument("name")
@click.option("--format", "fmt", type=click.Choice(["zenodo", "hf"]), required=True)
@click.option("--out", type=click.Path(path_type=Path), required=True)
@click.option("--root", type=click.Path(path_type=Path), help="Dataset folder [default: $MEDNF_HOME].")
def export(name: str, fmt: str, out: Path, root: Path | None) -> None:
    """Write a publishable copy of a built dataset: zenodo (one archive + SHA256SUMS + registry entry) or
    hf (Parquet shards + card with data_files, loadable by datasets.load_dataset, + manifest and θ)."""
    from mednf.loading import find_dataset
    from mednf.tasks.export import export_hf, export_zenodo, upload_hint

    if fmt == "hf":
        folder = export_hf(find_dataset(name, root), out)
        click.echo(f"wrote {folder}: data/*.parquet, README.md, mednf.json, model.safetensors; upload it with "
                   f"`{upload_hint(folder)}`")
        return
    archive = export_zenodo(find_dataset(name, root), out)
    click.echo(f"wrote {archive} ({archive.stat().st_size / 2**20:.1f} MiB), {out / 'SHA256SUMS'}, "
               f"{out / 'registry-entry.toml'}")


@main.command(name="eval")
@click.argument("name")
@click.option("--split", default="test", show_default=True, help="A split, or 'all'.")
@click.option("--out", type=click.Path(path_type=Path), help="Folder for summary.json and samples.parquet "
              "[default: ./<Name>-eval].")
@click.option("--plot", type=click.Path(path_type=Path), help="PNG: inputs, reconstructions, |error| maps.")
@click.option("--root", type=click.Path(path_type=Path), help="Dataset folder [default: $MEDNF_HOME].")
@click.option("--medmnist-root", type=click.Path(path_type=Path), envvar="MEDMNIST_ROOT",
              help="Where the source npz is [default: $MEDMNIST_ROOT or ~/.medmnist].")
@click.option("--gpu", type=int, default=None, help="Decode on cuda:N.")
@threads_option
def eval_(name: str, split: str, out: Path | None, plot: Path | None, root: Path | None,
          medmnist_root: Path | None, gpu: int | None) -> None:
    """MSE, PSNR and SSIM of NAME's decoded latents against the source images, per split and per sample."""
    from mednf.engine.device import resolve_device
    from mednf.format.manifest import Manifest
    from mednf.format.splits import check_split
    from mednf.loading import find_dataset
    from mednf.tasks.evaluate import evaluate, save_error_grid, write_report

    if plot is not None:
        _check_folder("--plot", plot)
    if out is not None and out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is invalid: it is a file, expected a folder for summary.json and "
                          "samples.parquet; choose another path")
    path = find_dataset(name, root)
    manifest = Manifest.read(path)
    splits = None if split == "all" else [check_split(split, [*manifest.splits, "all"], "--split")]
    device = resolve_device(gpu)
    report = evaluate(path, splits, medmnist_root=medmnist_root, device=device)
    folder = write_report(report, out or Path(f"{manifest.name}-eval"))
    click.echo(f"{report.name}: decoded vs source images ({report.seconds:.1f} s on {report.device})")
    for s, summary in report.summary()["splits"].items():
        stored = summary["stored_psnr_mean"]
        ssim = f"{summary['ssim_mean']:.4f}" if summary["ssim_mean"] is not None else "—"
        click.echo(f"  {s:5s} {summary['count']:7d}  MSE {summary['mse_mean']:.5f}  PSNR {summary['psnr_mean']:.2f} ± "
                   f"{summary['psnr_std']:.2f} dB  SSIM {ssim}"
                   + (f"  (recorded at build: {stored:.2f} dB)" if stored is not None else "")
                   + _baselines_text(summary["baselines"]))
    click.echo(f"wrote {folder / 'summary.json'} and {folder / 'samples.parquet'}")
    if plot is not None:
        save_error_grid(path, plot, split=splits[0] if splits else "test", medmnist_root=medmnist_root, device=device)
        click.echo(f"wrote {plot}: inputs, reconstructions, |error| (rows)")


@main.command()
@click.argument("name")
@click.option("--model", "model", type=click.Choice(["knn", "mlp", "all"]), default="all", show_default=True)
@click.option("--features", type=click.Choice(["latents", "pixels", "both"]), default="both", show_default=True,
              help="Latents, the raw-pixel baseline, or both in one table.")
@click.option("--epochs", type=click.IntRange(min=1), default=50, show_default=True, help="MLP epochs.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--json", "json_out", type=click.Path(path_type=Path), help="Also write the report as JSON.")
@click.option("--root", type=click.Path(path_type=Path), help="Dataset folder [default: $MEDNF_HOME].")
@click.option("--medmnist-root", type=click.Path(path_type=Path), envvar="MEDMNIST_ROOT",
              help="Where the source npz is (pixel baseline).")
@click.option("--gpu", type=int, default=None, help="Train the MLP on cuda:N.")
@threads_option
def classify(name: str, model: str, features: str, epochs: int, seed: int, json_out: Path | None,
             root: Path | None, medmnist_root: Path | None, gpu: int | None) -> None:
    """k-NN (k = 1, 3) and the paper's MLP on NAME's latents, beside the same on raw pixels (Table 4)."""
    import json

    from mednf.engine.device import resolve_device
    from mednf.tasks.classify import classify as run

    if json_out is not None:
        _check_folder("--json", json_out)
    models = ("knn", "mlp") if model == "all" else (model,)
    feats = ("latents", "pixels") if features == "both" else (features,)
    report = run(name, models, features=feats, root=root, medmnist_root=medmnist_root, epochs=epochs, seed=seed,
                 device=resolve_device(gpu))
    click.echo(report.to_markdown())
    if json_out is not None:
        from mednf.io.files import atomic_write_bytes

        atomic_write_bytes(json_out, (json.dumps(report.to_dict(), indent=2) + "\n").encode("utf-8"))
        click.echo(f"wrote {json_out}")


@main.command()
@click.argument("name")
@click.argument("images", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), required=True, help="latents.npz (latents, psnr, ssim).")
@click.option("--key", help="Array of IMAGES to encode [default: images, test_images, or the only one].")
@click.option("--resample", is_flag=True, help="Resize images of another size to the space's resolution.")
@click.option("--mask", "mask_path", type=click.Path(path_type=Path),
              help="An .npz with a bool/0-1 array 'mask' [N, *size] or [*size]: fit only the observed (True) pixels.")
@click.option("--root", type=click.Path(path_type=Path), help="Dataset folder [default: $MEDNF_HOME].")
@click.option("--gpu", type=int, default=None, help="Fit on cuda:N.")
@threads_option
def encode(name: str, images: Path, out: Path, key: str | None, resample: bool, mask_path: Path | None,
           root: Path | None, gpu: int | None) -> None:
    """Fit latents for the images of an .npz into NAME's space (its θ and fit settings)."""
    from mednf.engine.device import resolve_device
    from mednf.tasks.encode import encode as run
    from mednf.tasks.encode import read_images_npz

    _check_folder("--out", out)
    mask = None if mask_path is None else read_images_npz(mask_path, names=("mask",))
    result = run(read_images_npz(images, key), name, mask=mask, resample=resample, root=root,
                 device=resolve_device(gpu))
    _write_npz(out, latents=result.latents, psnr=result.psnr, ssim=result.ssim)
    where = " on the observed pixels" if mask is not None else ""
    click.echo(f"wrote {out}: {len(result.latents)} latents of P={result.latents.shape[1]} in the {result.space} "
               f"space, PSNR{where} {result.psnr.mean():.2f} ± {result.psnr.std():.2f} dB")


@main.command()
@click.argument("name")
@click.argument("images", type=click.Path(path_type=Path))
@click.option("--mask", "mask_path", type=click.Path(path_type=Path), required=True,
              help="An .npz with a bool/0-1 array 'mask' [N, *size] or [*size], True = observed pixel.")
@click.option("--out", type=click.Path(path_type=Path), required=True,
              help="recon.npz: recon [N, C, *size] float32 in [0, 1], latents, psnr_observed.")
@click.option("--key", help="Array of IMAGES [default: images, test_images, or the only one].")
@click.option("--size", type=int, default=None, help="Side length of the output grid [default: the space's].")
@click.option("--root", type=click.Path(path_type=Path), help="Dataset folder [default: $MEDNF_HOME].")
@click.option("--gpu", type=int, default=None, help="Fit on cuda:N.")
@threads_option
def inpaint(name: str, images: Path, mask_path: Path, out: Path, key: str | None, size: int | None,
            root: Path | None, gpu: int | None) -> None:
    """Fill the unobserved pixels of IMAGES: fit each to its observed pixels in NAME's space, decode it whole
    (a --size above the space's resolution gives super-resolution)."""
    from mednf.engine.device import resolve_device
    from mednf.tasks.encode import read_images_npz
    from mednf.tasks.inpaint import inpaint as run

    _check_folder("--out", out)
    mask = read_images_npz(mask_path, names=("mask",))
    result = run(read_images_npz(images, key), mask, name, size=size, root=root, device=resolve_device(gpu))
    _write_npz(out, recon=result.recon, latents=result.latents, psnr_observed=result.psnr_observed)
    click.echo(f"wrote {out}: {len(result.recon)} reconstructions of {'×'.join(map(str, result.recon.shape[2:]))} "
               f"in the {result.space} space, PSNR on the observed pixels {result.psnr_observed.mean():.2f} ± "
               f"{result.psnr_observed.std():.2f} dB")


def _write_npz(path: Path, **arrays: Any) -> None:
    """Write arrays to an .npz atomically (a reader never sees half a file)."""
    import io

    import numpy as np

    from mednf.io.files import atomic_write_bytes

    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    atomic_write_bytes(path, buffer.getvalue())


@main.command(name="import-official")
@click.argument("directory", type=click.Path(path_type=Path))
@click.option("--name", required=True, help="Sub-dataset, e.g. ChestNF (its builder gives labels and split sizes).")
@click.option("--out", type=click.Path(path_type=Path), help="New dataset folder [default: $MEDNF_HOME/<Name>].")
@click.option("--w0", type=float, help="ω of the first layer, only for a model.pt that is a plain state dict.")
@click.option("--w0-increment", type=float, help="ω increment per layer (with --w0; official 2D configs: 5).")
@click.option("--measure", is_flag=True, help="Also decode every latent and record PSNR/SSIM (needs the MedMNIST file).")
@click.option("--medmnist-root", type=click.Path(path_type=Path), envvar="MEDMNIST_ROOT",
              help="Where the source npz is (label check, --measure).")
@click.option("--gpu", type=int, default=None, help="Measure on cuda:N.")
@threads_option
def import_official(directory: Path, name: str, out: Path | None, w0: float | None, w0_increment: float | None,
                    measure: bool, medmnist_root: Path | None, gpu: int | None) -> None:
    """Convert the official MedNF release layout (model.pt, {train,val,test}/datapoint_{i}.pt) into
    mednf's format, reading it weights-only (no arbitrary unpickling)."""
    from mednf.engine.device import resolve_device
    from mednf.format.layout import mednf_home
    from mednf.format.manifest import Manifest
    from mednf.remote.official_import import import_official as run
    from mednf.sources.spec import load_builder

    target = out or mednf_home() / load_builder(name).name
    path = run(directory, name, target, medmnist_root=medmnist_root, measure=measure, w0=w0,
               w0_increment=w0_increment, device=resolve_device(gpu))
    manifest = Manifest.read(path)
    counts = ", ".join(f"{s} {v.count}" for s, v in manifest.splits.items())
    dropped = {s: len(v) for s, v in manifest.origin["missing"].items() if v}
    click.echo(f"imported {manifest.name} into {path}: {counts}")
    if dropped:
        click.echo("  without a datapoint in the release (the official fit dropped incomplete batches): "
                   + ", ".join(f"{s} {n}" for s, n in dropped.items()) + " (listed in mednf.json origin.missing)")
    if not manifest.source["labels_checked"]:
        click.echo("  labels not checked against MedMNIST (file not found locally; give --medmnist-root)")


if __name__ == "__main__":
    main()
