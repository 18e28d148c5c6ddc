"""Verified download of a registered dataset from the HF Hub; mednf's own format is rebuilt from the Parquet
shards and checked against the manifest.

The Hub is read with mednf's own transfer (:mod:`mednf.io.http`: URL policy on every redirect, timeouts, size
limits, the safe JSON parser), not ``huggingface_hub``: ``GET {endpoint}/api/datasets/{repo}/revision/{rev}``
names the commit and lists its files, and ``{endpoint}/datasets/{repo}/resolve/{commit}/{path}`` serves each
file (usually by a redirect to the Hub's CDN). Only the files :func:`rebuild` reads are fetched: the manifest
first (checked, and pinned by the registry), then θ, the figures and the Parquet shards. No token is sent:
the registered copies are public.
"""

from __future__ import annotations

import re
import shutil
import urllib.parse
from pathlib import Path
from typing import Any

from mednf.errors import DownloadError, FormatError
from mednf.format.layout import FIGURES, INDEX, MANIFEST, MODEL, mednf_home
from mednf.format.manifest import Manifest
from mednf.format.splits import hf_split
from mednf.format.writer import DatasetWriter, SplitIndex, index_digest, latent_digest, row_blocks
from mednf.io import jsonsafe
from mednf.io.files import sha256_file
from mednf.io.http import fetch_verified, get_json, read_bytes
from mednf.remote.fetch import MAX_MANIFEST_BYTES, hf_endpoint
from mednf.remote.install import fetch_folder, install
from mednf.remote.registry import offline_check, registry_entry
from mednf.sources.kinds import source_card_line

_REPO = re.compile(r"[\w.-]+/[\w.-]+")
_COMMIT = re.compile(r"[0-9a-f]{40}")
_SHARD = re.compile(r"data/[\w.-]+\.parquet")  # the export's shards (no deeper folders, no "..")
_ENDPOINT_FIX = "check that MEDNF_HF_ENDPOINT (or HF_ENDPOINT) points at the Hugging Face Hub, or try again later"


def download_hf(name: str, *, root: str | Path | None = None, endpoint: str | None = None,
                progress: bool = True) -> Path:
    """Fetch the registered HF Hub copy of ``name`` (the files :func:`rebuild` reads), verify θ by
    sha256 and every split's latents by the manifest's digest of the raw float32 rows, and rebuild
    mednf's own format from it in the cache."""
    key, entry = registry_entry(name)
    repo, revision = entry.get("hf_repo"), entry.get("hf_revision")
    if not repo:
        raise DownloadError(f"{key} has no HF Hub repository in the registry; try --source zenodo or build it")
    home = Path(root).expanduser() if root else mednf_home()
    target = home / key
    endpoint = endpoint or hf_endpoint()

    def produce(tmp: Path) -> None:
        offline_check(key, f"on a machine that reaches {endpoint}, run `mednf download {key} --source hf --root DIR` "
                           f"and copy DIR/{key} to {target}")
        snapshot = fetch_folder(target)
        manifest = _snapshot(repo, revision, endpoint.rstrip("/"), snapshot, entry.get("manifest_sha256"), progress)
        rebuild(snapshot, tmp, manifest.replace(origin={"hf_repo": repo, "revision": revision, "endpoint": endpoint}),
                repo)

    return install(target, produce, what=f"{key} (HF {repo})")


def _snapshot(repo: str, revision: str | None, endpoint: str, into: Path, pinned: str | None,
              progress: bool) -> Manifest:
    """The files of the HF export ``repo`` that :func:`rebuild` reads, at ``revision`` (default main), fetched
    into ``into``; returns its manifest, checked (and pinned by the registry's sha256 when it has one) before
    anything else is fetched. θ and the figures are fetched by the manifest's sizes, the Parquet shards by
    their ``Content-Length``; :func:`rebuild` checks every byte of them against the manifest."""
    if not (isinstance(repo, str) and _REPO.fullmatch(repo) and ".." not in repo.split("/")):
        raise DownloadError(f"the registry's hf_repo {str(repo)[:80]!r} is not an HF repository name (owner/name); "
                            "fix the registry")
    try:
        rev = urllib.parse.quote(str(revision or "main"), safe="")
        info = get_json(f"{endpoint}/api/datasets/{repo}/revision/{rev}", fix=_ENDPOINT_FIX)
        sha, names = _revision(info, repo)
        base = f"{endpoint}/datasets/{repo}/resolve/{sha}"
        if MANIFEST not in names:
            raise DownloadError(f"{repo} has no {MANIFEST}; it is not a mednf export, discarded")
        data = read_bytes(f"{base}/{MANIFEST}", limit=MAX_MANIFEST_BYTES)
    except DownloadError as err:
        raise DownloadError(f"could not download {repo} from {endpoint}: {err}") from None
    into.mkdir(parents=True, exist_ok=True)
    (into / MANIFEST).write_bytes(data)
    manifest = _remote_manifest(into, repo, pinned)
    try:
        for rel in names:
            if rel in (MODEL, *FIGURES) and rel in manifest.files:
                fetch_verified(f"{base}/{rel}", into / rel, size=manifest.files[rel].size, progress=progress)
            elif _SHARD.fullmatch(rel):
                fetch_verified(f"{base}/{rel}", into / rel, size=None, progress=progress)
    except DownloadError as err:
        raise DownloadError(f"could not download {repo} from {endpoint}: {err}") from None
    return manifest


def _revision(info: Any, repo: str) -> tuple[str, list[str]]:
    """``(commit, file names)`` from the Hub's answer about a revision (``{"sha": …, "siblings": [{"rfilename":
    …}]}``), checked."""
    sha = info.get("sha") if isinstance(info, dict) else None
    siblings = info.get("siblings") if isinstance(info, dict) else None
    if not isinstance(sha, str) or not _COMMIT.fullmatch(sha) or not isinstance(siblings, list):
        raise DownloadError(f"the Hub's answer about {repo} names no commit (40 hex digits) and file list; "
                            f"{_ENDPOINT_FIX}")
    names = [item.get("rfilename") for item in siblings if isinstance(item, dict)]
    return sha, [name for name in names if isinstance(name, str)]


def _remote_manifest(snapshot: Path, repo: str, pinned: str | None) -> Manifest:
    """The repository's manifest: pinned by the registry's sha256 when it has one, then parsed and checked."""
    path = snapshot / MANIFEST
    if not path.is_file():
        raise DownloadError(f"{repo} has no {MANIFEST}; it is not a mednf export, discarded")
    if pinned and sha256_file(path) != pinned:
        raise DownloadError(f"{MANIFEST} of {repo} has sha256 {sha256_file(path)}, the registry pins {pinned}; "
                            "discarded")
    try:
        return Manifest.from_json(jsonsafe.loads(path.read_bytes(), f"{MANIFEST} of {repo}", "discarded"), path)
    except FormatError as err:
        raise DownloadError(f"{MANIFEST} of {repo} is not a valid manifest ({err}); discarded") from None


def rebuild(snapshot: Path, out: Path, manifest: Manifest, repo: str) -> Manifest:
    """Write mednf's own format in ``out`` from an HF export in ``snapshot``, every part checked against
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
