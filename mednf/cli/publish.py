"""Published copies: ``download`` one into the cache, ``export`` a built dataset for publishing (and push it
to the Hugging Face Hub), and ``import-official`` (the official MedNF release into mednf's format)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from mednf.cli.errors import GuardedCommand
from mednf.cli.options import CACHE_FOLDER, gpu_option, medmnist_root_option, root_option, threads_option
from mednf.cli.output import Printer, printing_options
from mednf.engine.device import resolve_device
from mednf.errors import ConfigError, DownloadError, FormatError, MednfError, NotFoundError
from mednf.format.layout import mednf_home
from mednf.format.manifest import Manifest
from mednf.format.reader import verify_dataset
from mednf.loading import find_dataset
from mednf.optional import optional_import
from mednf.remote.hf import download_hf
from mednf.remote.official_import import import_official as run_import
from mednf.remote.registry import is_registered, registry, registry_entry
from mednf.remote.zenodo import download_zenodo
from mednf.sources.spec import load_builder
from mednf.tasks.export import export_hf, export_zenodo, hf_registry_entry, upload_hint
from mednf.tasks.push import push_hf


def _download_one(name: str, source: str, root: Path | None, printer: Printer) -> dict[str, Any]:
    """Download ``name`` unless a complete, verified copy is in the cache; what was done, as JSON-ready values."""
    key = registry_entry(name)[0] if is_registered(name) else name
    try:
        path = find_dataset(key, root)
        manifest = verify_dataset(path, checksums=True)  # remembered while unchanged: cheap after the first time
        if manifest.origin is None:  # built by mednf here, or a mednf export (which keeps its builder's manifest)
            printer.line(f"{manifest.name} is already in {path}, complete and verified (built by mednf): nothing "
                         "downloaded; use another --root to download the published copy")
        else:
            printer.line(f"{manifest.name} is already in {path}, complete and verified (a download or import): "
                         "nothing downloaded")
        return {"name": manifest.name, "path": str(path), "downloaded": False}
    except NotFoundError:
        pass
    except FormatError as err:
        if not is_registered(name):
            raise
        printer.note(f"the copy in the cache does not verify ({err}); downloading it again")
    key, _ = registry_entry(name)  # not registered: the one line saying so and how to build it
    path = (download_hf if source == "hf" else download_zenodo)(key, root=root, progress=printer.progress)
    printer.line(f"downloaded and verified {key} into {path}")
    return {"name": key, "path": str(path), "downloaded": True}


@click.command(cls=GuardedCommand)
@click.argument("names", metavar="[NAME]...", nargs=-1)
@click.option("--all", "everything", is_flag=True, help="Every dataset the registry names (see `mednf list`).")
@click.option("--source", type=click.Choice(["zenodo", "hf"]), default="zenodo", show_default=True,
              help="Where to download from: the Zenodo record or the Hugging Face Hub mirror.")
@root_option(CACHE_FOLDER)
@printing_options
def download(names: tuple[str, ...], everything: bool, source: str, root: Path | None, printer: Printer) -> None:
    """Download a published dataset into the cache, verified.

    Every file is checked (sha256, md5, manifest). A dataset that is already complete in the cache (built
    or downloaded) is left as it is. With --all, every registered dataset; one that fails does not stop the
    others, and the command fails at the end naming it."""
    if everything and names:
        raise ConfigError(f"--all and the names {' '.join(names)} were both given: expected one of them; drop one")
    if not everything and not names:
        raise ConfigError("no dataset named: expected NAME (e.g. `mednf download DermaNF`) or --all")
    done: list[dict[str, Any]] = []
    failed: list[str] = []
    for name in (list(registry()) if everything else names):
        try:
            done.append(_download_one(name, source, root, printer))
        except MednfError as err:
            if not everything:
                raise
            printer.note(f"error: {name}: {err}")
            done.append({"name": name, "error": str(err)})
            failed.append(name)
    printer.result(done if everything or len(done) > 1 else done[0])
    if failed:
        raise DownloadError(f"{len(failed)} of {len(done)} downloads failed ({', '.join(failed)}; each said why "
                            "above); rerun `mednf download --all` to retry them, the others are kept")


@click.command(cls=GuardedCommand)
@click.argument("name")
@click.option("--format", "fmt", type=click.Choice(["zenodo", "hf"]), required=True,
              help="zenodo: one archive to upload to a record; hf: a folder to upload to a Hub dataset repository.")
@click.option("--out", type=click.Path(path_type=Path), required=True,
              help="The export folder: new, empty, or an earlier export of the same dataset.")
@click.option("--push", "push_to", metavar="ORG/NAME",
              help="With --format hf: also upload the folder to this Hub dataset repository (created if absent; "
                   "needs a token: `hf auth login` or $HF_TOKEN) and complete the registry entry with the commit.")
@root_option()
@printing_options
def export(name: str, fmt: str, out: Path, push_to: str | None, root: Path | None, printer: Printer) -> None:
    """Export NAME for Zenodo or the Hugging Face Hub.

    zenodo: one archive + SHA256SUMS + registry entry; hf: Parquet shards + card with data_files (loadable
    by datasets.load_dataset) + manifest and θ, and the registry entry beside the folder (OUT.registry-entry.toml)."""
    if push_to is not None and fmt != "hf":
        raise ConfigError(f"--push {push_to} is invalid with --format {fmt}: the Hub takes the hf export; "
                          "add --format hf")
    if fmt == "hf":
        if not printer.progress:  # datasets draws its own bars while it writes the Parquet shards
            optional_import("datasets", "mednf export --format hf").disable_progress_bars()
        folder = export_hf(find_dataset(name, root), out)
        entry = hf_registry_entry(folder)
        printer.line(f"wrote {folder}: data/*.parquet, README.md, mednf.json, model.safetensors")
        if push_to is None:
            printer.line(f"upload it as it is with `{upload_hint(folder)}`, or export again with --push ORG/NAME")
            printer.line(f"wrote {entry} beside it (not uploaded): the registry entry, to complete with the commit "
                         "of the upload")
            printer.result({"format": "hf", "folder": str(folder), "registry_entry": str(entry)})
            return
        commit = push_hf(folder, push_to)
        printer.line(f"uploaded it to https://huggingface.co/datasets/{push_to} (commit {commit}); wrote {entry} "
                     "beside it: the registry entry that pins this commit")
        printer.result({"format": "hf", "folder": str(folder), "registry_entry": str(entry), "hf_repo": push_to,
                        "hf_revision": commit})
        return
    archive = export_zenodo(find_dataset(name, root), out)
    printer.line(f"wrote {archive} ({archive.stat().st_size / 2**20:.1f} MiB), {out / 'SHA256SUMS'}, "
                 f"{out / 'registry-entry.toml'}")
    printer.result({"format": "zenodo", "archive": str(archive), "size_bytes": archive.stat().st_size,
                    "sha256sums": str(out / "SHA256SUMS"), "registry_entry": str(out / "registry-entry.toml")})


@click.command(name="import-official", cls=GuardedCommand)
@click.argument("directory", type=click.Path(path_type=Path))
@click.option("--name", required=True, help="Sub-dataset, e.g. ChestNF (its builder gives labels and split sizes).")
@click.option("--out", type=click.Path(path_type=Path), help="New dataset folder [default: $MEDNF_HOME/<Name>].")
@click.option("--w0", type=float, help="ω of the first layer, only for a model.pt that is a plain state dict.")
@click.option("--w0-increment", type=float, help="ω increment per layer (with --w0; official 2D configs: 5).")
@click.option("--measure", is_flag=True,
              help="Also decode every latent and record PSNR/SSIM (needs the MedMNIST file).")
@medmnist_root_option("Where the source npz is (label check, --measure).")
@gpu_option("Measure on cuda:N.")
@threads_option
@printing_options
def import_official(directory: Path, name: str, out: Path | None, w0: float | None, w0_increment: float | None,
                    measure: bool, medmnist_root: Path | None, gpu: int | None, printer: Printer) -> None:
    """Convert the official MedNF release into mednf's format.

    The release layout is model.pt and {train,val,test}/datapoint_{i}.pt; it is read weights-only (no
    arbitrary unpickling)."""
    target = out or mednf_home() / load_builder(name).name
    path = run_import(directory, name, target, medmnist_root=medmnist_root, measure=measure, w0=w0,
                      w0_increment=w0_increment, device=resolve_device(gpu), progress=printer.progress)
    manifest = Manifest.read(path)
    counts = ", ".join(f"{s} {v.count}" for s, v in manifest.splits.items())
    dropped = {s: len(v) for s, v in manifest.origin["missing"].items() if v}
    printer.line(f"imported {manifest.name} into {path}: {counts}")
    if dropped:
        printer.line("  without a datapoint in the release (the official fit dropped incomplete batches): "
                     + ", ".join(f"{s} {n}" for s, n in dropped.items()) + " (listed in mednf.json origin.missing)")
    if not manifest.source["labels_checked"]:
        printer.line("  labels not checked against MedMNIST (file not found locally; give --medmnist-root)")
    printer.result({"name": manifest.name, "path": str(path),
                    "counts": {s: v.count for s, v in manifest.splits.items()}, "missing": dropped,
                    "labels_checked": bool(manifest.source["labels_checked"])})
