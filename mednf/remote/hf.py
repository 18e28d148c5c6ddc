"""Verified download of a registered dataset from the HF Hub (``huggingface_hub.snapshot_download``); mednf's
own format is rebuilt from the Parquet shards and checked against the manifest.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from mednf.errors import DownloadError, FormatError
from mednf.format.layout import FIGURES, INDEX, MANIFEST, MODEL, mednf_home
from mednf.format.manifest import Manifest
from mednf.format.writer import DatasetWriter, SplitIndex, index_digest, latent_digest, row_blocks
from mednf.io.files import sha256_file
from mednf.io.http import TIMEOUT_S
from mednf.remote.install import fetch_folder, install
from mednf.remote.registry import offline_check, registry_entry
from mednf.format.splits import hf_split
from mednf.sources.kinds import source_card_line


def download_hf(name: str, *, root: str | Path | None = None, endpoint: str | None = None,
                progress: bool = True) -> Path:
    """Fetch the registered HF Hub copy of ``name`` (``huggingface_hub.snapshot_download``), verify θ by
    sha256 and every split's latents by the manifest's digest of the raw float32 rows, and rebuild
    mednf's own format from it in the cache."""
    key, entry = registry_entry(name)
    repo, revision = entry.get("hf_repo"), entry.get("hf_revision")
    if not repo:
        raise DownloadError(f"{key} has no HF Hub repository in the registry; try --source zenodo or build it")
    home = Path(root).expanduser() if root else mednf_home()
    target = home / key
    endpoint = endpoint or os.environ.get("MEDNF_HF_ENDPOINT") or os.environ.get("HF_ENDPOINT") or "https://huggingface.co"

    def produce(tmp: Path) -> None:
        offline_check(key, f"on a machine that reaches {endpoint}, run `mednf download {key} --source hf --root DIR` "
                           f"and copy DIR/{key} to {target}")
        snapshot = fetch_folder(target)
        _snapshot(repo, revision, endpoint, snapshot)
        manifest = _remote_manifest(snapshot, repo, entry.get("manifest_sha256"))
        rebuild(snapshot, tmp, manifest.replace(origin={"hf_repo": repo, "revision": revision, "endpoint": endpoint}),
                repo)

    return install(target, produce, what=f"{key} (HF {repo})")


def _snapshot(repo: str, revision: str | None, endpoint: str, into: Path) -> None:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        # a cache_dir of our own (removed with the snapshot): else refs land in the user's hub cache
        snapshot_download(repo, repo_type="dataset", revision=revision, local_dir=into, endpoint=endpoint,
                          etag_timeout=TIMEOUT_S, cache_dir=into / ".hub-cache")
    except (HfHubHTTPError, LocalEntryNotFoundError, OSError) as err:
        raise DownloadError(f"could not download {repo} from {endpoint} ({str(err).splitlines()[0]}); "
                            "nothing was kept, run again") from None


def _remote_manifest(snapshot: Path, repo: str, pinned: str | None) -> Manifest:
    """The repository's manifest: pinned by the registry's sha256 when it has one, then parsed and checked."""
    path = snapshot / MANIFEST
    if not path.is_file():
        raise DownloadError(f"{repo} has no {MANIFEST}; it is not a mednf export, discarded")
    if pinned and sha256_file(path) != pinned:
        raise DownloadError(f"{MANIFEST} of {repo} has sha256 {sha256_file(path)}, the registry pins {pinned}; "
                            "discarded")
    try:
        return Manifest.read(snapshot)
    except FormatError as err:
        raise DownloadError(f"{MANIFEST} of {repo} is not a valid manifest ({err}); discarded") from None


def rebuild(snapshot: Path, out: Path, manifest: Manifest, repo: str) -> Manifest:
    """mednf's own format in ``out`` from an HF export in ``snapshot``, every part checked against
    ``manifest`` (θ by sha256, each split's latents by row count and digest) before it is written."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    model = snapshot / MODEL
    expected = manifest.files.get(MODEL)
    actual = sha256_file(model) if model.is_file() else "missing"
    if expected is None or actual != expected.sha256:
        raise DownloadError(f"{MODEL} of {repo} has sha256 {actual}, expected "
                            f"{expected.sha256 if expected else 'an entry in the manifest'}; discarded")
    writer = DatasetWriter(out, latent_dim=manifest.latent.dim, chunk_rows=manifest.latent.chunk_rows)
    writer.prepare()
    shutil.copyfile(model, out / MODEL)
    writer.create_latents({s: v.count for s, v in manifest.splits.items()}, {"name": manifest.name})
    for name in FIGURES:  # the card's curves and grid: kept when present (older exports have none), if intact
        entry, copy = manifest.files.get(name), snapshot / name
        if entry is not None and copy.is_file():
            if sha256_file(copy) != entry.sha256:
                raise DownloadError(f"{name} of {repo} has sha256 {sha256_file(copy)}, the manifest says "
                                    f"{entry.sha256}; discarded")
            shutil.copyfile(copy, out / name)
    index = {}
    for split, stats in manifest.splits.items():
        shard = snapshot / "data" / f"{hf_split(split)}-00000-of-00001.parquet"
        if not shard.is_file():  # exported by an older mednf, which named the validation shard "val"
            shard = snapshot / "data" / f"{split}-00000-of-00001.parquet"
        try:
            table = pq.read_table(shard)
            latents = table["latent"].combine_chunks().flatten().to_numpy().reshape(len(table), -1)
        except (OSError, KeyError, ValueError, pa.ArrowException) as err:
            raise DownloadError(f"{shard.name} of {repo} is not a readable mednf Parquet shard ({err}); "
                                "discarded") from None
        digest = latent_digest(latents)
        if len(table) != stats.count or digest != stats.latents_sha256:
            raise DownloadError(f"split {split!r} of {repo} has {len(table)} rows with latent digest {digest[:16]}…, "
                                f"expected {stats.count} rows and {stats.latents_sha256[:16]}…; discarded")
        for start, stop in row_blocks(stats.count, manifest.latent.chunk_rows):
            writer.write_latents(split, start, latents[start:stop])
        labels = (table["label"].combine_chunks().flatten().to_numpy().reshape(stats.count, -1) if manifest.multi_label
                  else table["label"].to_numpy()[:, None])
        index[split] = SplitIndex(table["index"].to_numpy(), labels, table["psnr"].to_numpy(),
                                  table["ssim"].to_numpy())
        if stats.index_sha256 is not None and index_digest(index[split]) != stats.index_sha256:
            raise DownloadError(f"split {split!r} of {repo} has index rows (labels, source indices, PSNR) that differ "
                                "from its manifest; discarded")
    written = writer.finish(manifest, index, source_card_line(manifest.source))
    if any(stats.index_sha256 is None for stats in manifest.splits.values()) and (
            written.files[INDEX].sha256 != manifest.files[INDEX].sha256):  # exported by an older mednf
        raise DownloadError(f"the index rows of {repo} differ from its manifest's {INDEX}; discarded")
    return written
