"""The on-disk format of one built MedNF sub-dataset (see DESIGN.md), writer side and verification.

::

    <Name>/
      mednf.json          manifest, written last: its presence means "complete"
      model.safetensors   θ* (shared network), flat names as in mednf.engine.field
      latents.zarr/       Zarr v3 group, one array per split [N, P] float32, chunks of block_rows rows
      index.parquet       one row per sample: split, row, source_index, label | labels, psnr, ssim
      README.md           dataset card
      build.log           log of the build (not part of the checksummed content)

Libraries: zarr (v3 format, chunked + Blosc/zstd; concurrent writers are safe on disjoint chunk-aligned
row blocks, which is how ranks share the arrays), pyarrow for Parquet, safetensors for θ. Nothing is
pickled. While a build runs, its state lives in ``.partial/`` (checkpoints, finished-block records); it
is removed once the manifest is written.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mednf.errors import FormatError

FORMAT_VERSION = 1
MANIFEST = "mednf.json"
MODEL = "model.safetensors"
LATENTS = "latents.zarr"
INDEX = "index.parquet"
CARD = "README.md"
LOG = "build.log"
WORK = ".partial"
_NOT_CONTENT = {MANIFEST, LOG, WORK, ".lock"}


def mednf_home() -> Path:
    """Where datasets live by default: ``$MEDNF_HOME`` or ``~/.cache/mednf``."""
    return Path(os.environ.get("MEDNF_HOME") or "~/.cache/mednf").expanduser()


def unfinished_build(path: Path) -> bool:
    """True if ``path`` holds the state of a build in progress or interrupted (``.partial/``: checkpoints,
    fitted blocks), which a download must never replace. A build that failed before it started leaves
    only ``build.log``: nothing to keep."""
    return (path / WORK).is_dir()




def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary name, fsync, rename: readers see the old file or the whole new one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------- θ


def save_params(path: Path, params: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    """θ (and optionally other tensors) as safetensors, written atomically."""
    from safetensors.torch import save

    tensors = {k: v.detach().cpu().contiguous() for k, v in params.items()}
    atomic_write_bytes(path, save(tensors, metadata=metadata))


def load_params(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and metadata of a safetensors file."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        return {k: fh.get_tensor(k) for k in fh.keys()}, dict(fh.metadata() or {})  # noqa: SIM118 (not a dict)


# ------------------------------------------------------------------------------------------ latents


def create_latent_arrays(out: Path, counts: dict[str, int], latent_dim: int, block_rows: int,
                         attrs: dict[str, Any]) -> None:
    """Create ``latents.zarr`` with one empty [N, P] float32 array per split (called once, by rank 0).

    Attributes are written here, before any block: concurrent writers only touch chunk files.
    """
    import zarr
    from zarr.codecs import BloscCodec

    group = zarr.open_group(str(out / LATENTS), mode="w", zarr_format=3)
    group.attrs.update({"format": "mednf-latents", **attrs})
    for split, count in counts.items():
        array = group.create_array(
            split, shape=(count, latent_dim), chunks=(min(block_rows, max(count, 1)), latent_dim), dtype="float32",
            compressors=BloscCodec(cname="zstd", clevel=5, shuffle="bitshuffle"), fill_value=float("nan"),
        )
        array.attrs.update({"split": split, "latent_dim": latent_dim, **attrs})


def open_latent_array(out: Path, split: str, mode: str = "r"):
    import zarr

    return zarr.open_array(str(out / LATENTS / split), mode=mode)


def write_latent_block(out: Path, split: str, start: int, latents: np.ndarray) -> None:
    """Rows ``[start, start + n)`` of a split; ``start`` must be chunk-aligned (disjoint per writer)."""
    array = open_latent_array(out, split, mode="r+")
    array[start:start + len(latents)] = latents


# ------------------------------------------------------------------------------------------ index


def write_index(path: Path, table_columns: dict[str, Any]) -> None:
    """The per-sample index as Parquet (written atomically)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table(table_columns)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    pq.write_table(table, tmp, compression="zstd")
    os.replace(tmp, path)


def index_columns(split_names: list[str], rows: list[np.ndarray], source_index: list[np.ndarray],
                  labels: list[np.ndarray], psnr: list[np.ndarray], ssim: list[np.ndarray],
                  multi_label: bool) -> dict[str, Any]:
    """Columns of ``index.parquet``: split (dictionary), row, source_index, label|labels, psnr, ssim."""
    import pyarrow as pa

    split_col = np.concatenate([np.full(len(r), s, dtype=object) for s, r in zip(split_names, rows)])
    cols: dict[str, Any] = {
        "split": pa.array(split_col, pa.string()).dictionary_encode(),
        "row": pa.array(np.concatenate(rows).astype(np.int64)),
        "source_index": pa.array(np.concatenate(source_index).astype(np.int64)),
    }
    all_labels = np.concatenate(labels)
    if multi_label:
        flat = pa.array(all_labels.astype(np.int8).reshape(-1))
        cols["labels"] = pa.FixedSizeListArray.from_arrays(flat, all_labels.shape[1])
    else:
        cols["label"] = pa.array(all_labels[:, 0].astype(np.int64))
    cols["psnr"] = pa.array(np.concatenate(psnr).astype(np.float32))
    cols["ssim"] = pa.array(np.concatenate(ssim).astype(np.float32))
    return cols


# ------------------------------------------------------------------------------------------ manifest


def content_files(root: Path) -> list[Path]:
    """Every file that belongs to the dataset's content (what the manifest checksums), sorted."""
    files = []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if rel.parts[0] in _NOT_CONTENT or rel.name.startswith(".") or not path.is_file():
            continue
        files.append(path)
    return files


def file_table(root: Path) -> dict[str, dict[str, Any]]:
    """``{relative path: {"sha256", "size"}}`` of the content files."""
    return {p.relative_to(root).as_posix(): {"sha256": sha256_file(p), "size": p.stat().st_size}
            for p in content_files(root)}


def manifest_header(spec: Any, engine: Any) -> dict[str, Any]:
    """The first manifest fields of a dataset made from builder ``spec`` with ``engine`` (EngineConfig)."""
    return {"format": "mednf", "format_version": FORMAT_VERSION, "name": spec.name, "builder": spec.to_dict(),
            "engine": engine.to_dict(), "seed": spec.seed,
            "fit_seed": spec.seed}  # rescaling subsets keyed by (fit_seed, row within the split, step)


def software_versions() -> dict[str, str]:
    """Versions recorded in a manifest: mednf, torch, zarr, numcodecs, pyarrow, python."""
    import platform

    import numcodecs
    import pyarrow
    import torch
    import zarr

    from mednf import __version__

    return {"mednf": __version__, "torch": torch.__version__, "zarr": zarr.__version__,
            "numcodecs": numcodecs.__version__, "pyarrow": pyarrow.__version__, "python": platform.python_version()}


def read_manifest(root: Path) -> dict[str, Any]:
    path = Path(root) / MANIFEST
    if not path.is_file():
        raise FormatError(f"{root} has no {MANIFEST}: it is not a complete MedNF dataset (an unfinished build "
                          "resumes when you run the same `mednf build` again)")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise FormatError(f"{path} is not valid JSON ({err}); rebuild or download the dataset again") from None
    if manifest.get("format") != "mednf" or manifest.get("format_version") != FORMAT_VERSION:
        raise FormatError(f"{path}: format {manifest.get('format')!r} version {manifest.get('format_version')!r} "
                          f"is not supported: expected mednf version {FORMAT_VERSION}; upgrade mednf")
    return manifest


def verify_dataset(root: str | Path, *, checksums: bool = True) -> dict[str, Any]:
    """Check a dataset against its manifest: every listed file present with its size (and sha256),
    no unlisted content files, and one index row per sample. Returns the manifest."""
    root = Path(root)
    manifest = read_manifest(root)
    check_content(root, manifest, checksums=checksums)
    return manifest


def check_content(root: Path, manifest: dict[str, Any], *, checksums: bool = True) -> None:
    """The checks of :func:`verify_dataset` against a manifest given in memory (before it is written)."""
    listed = manifest["files"]
    present = {p.relative_to(root).as_posix() for p in content_files(root)}
    missing = sorted(set(listed) - present)
    extra = sorted(present - set(listed))
    if missing or extra:
        raise FormatError(f"{root}: files missing {missing[:5]} / not in the manifest {extra[:5]}; "
                          "the dataset is damaged, rebuild or download it again")
    for rel, entry in listed.items():
        path = root / rel
        size = path.stat().st_size
        if size != entry["size"]:
            raise FormatError(f"{path} has {size} bytes, the manifest says {entry['size']}; rebuild or download again")
        if checksums:
            digest = sha256_file(path)
            if digest != entry["sha256"]:
                raise FormatError(f"{path} has sha256 {digest}, the manifest says {entry['sha256']}; "
                                  "rebuild or download again")
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    index = pq.read_table(root / INDEX, columns=["split", "row"])
    splits = index["split"].cast("string")
    for split, info in manifest["splits"].items():
        rows = np.sort(index.filter(pc.equal(splits, split))["row"].to_numpy())
        if not np.array_equal(rows, np.arange(info["count"])):
            raise FormatError(f"{root}: index rows of split {split!r} are not exactly 0..{info['count'] - 1}; "
                              "rebuild the dataset")
    if len(index) != sum(info["count"] for info in manifest["splits"].values()):
        raise FormatError(f"{root}: {INDEX} has {len(index)} rows, the manifest counts "
                          f"{sum(info['count'] for info in manifest['splits'].values())}; rebuild the dataset")
