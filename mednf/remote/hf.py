"""Verified download of a registered dataset from the HF Hub (``huggingface_hub.snapshot_download``); mednf's
own format is rebuilt from the Parquet shards and checked against the manifest.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from mednf.errors import DownloadError
from mednf.format.store import MANIFEST, mednf_home, sha256_file
from mednf.io.http import TIMEOUT_S
from mednf.remote.registry import check_target, offline_check, registry_entry


def download_hf(name: str, *, root: str | Path | None = None, endpoint: str | None = None,
                progress: bool = True) -> Path:
    """Fetch the registered HF Hub copy of ``name`` (``huggingface_hub.snapshot_download``), verify θ by
    sha256 and every split's latents by the manifest's digest of the raw float32 rows, and rebuild
    mednf's own format from it in the cache."""
    import hashlib as _hashlib

    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    from mednf.format.card import render_card
    from mednf.format.store import (
        CARD,
        INDEX,
        atomic_write_bytes,
        atomic_write_json,
        check_content,
        create_latent_arrays,
        file_table,
        index_columns,
        write_index,
        write_latent_block,
    )

    key, entry = registry_entry(name)
    repo, revision = entry.get("hf_repo"), entry.get("hf_revision")
    if not repo:
        raise DownloadError(f"{key} has no HF Hub repository in the registry; try --source zenodo or build it")
    home = Path(root).expanduser() if root else mednf_home()
    target = home / key
    endpoint = endpoint or os.environ.get("MEDNF_HF_ENDPOINT") or os.environ.get("HF_ENDPOINT") or "https://huggingface.co"
    check_target(target)
    offline_check(key, f"{endpoint}/datasets/{repo}", target)
    snapshot = home / f".{key}.hf-{os.getpid()}"
    build = home / f".{key}.rebuild-{os.getpid()}"
    try:
        try:
            snapshot_download(repo, repo_type="dataset", revision=revision, local_dir=snapshot, endpoint=endpoint,
                              etag_timeout=TIMEOUT_S)
        except (HfHubHTTPError, LocalEntryNotFoundError, OSError) as err:
            raise DownloadError(f"could not download {repo} from {endpoint} ({str(err).splitlines()[0]}); "
                                "nothing was kept, run again") from None
        pinned = entry.get("manifest_sha256")
        if pinned and (snapshot / MANIFEST).is_file() and sha256_file(snapshot / MANIFEST) != pinned:
            raise DownloadError(f"{MANIFEST} of {repo} has sha256 {sha256_file(snapshot / MANIFEST)}, the registry "
                                f"pins {pinned}; discarded")
        try:
            manifest = json.loads((snapshot / MANIFEST).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as err:
            raise DownloadError(f"{MANIFEST} of {repo} is missing or not JSON ({err}); discarded") from None
        expected = manifest["files"]["model.safetensors"]["sha256"]
        actual = sha256_file(snapshot / "model.safetensors")
        if actual != expected:
            raise DownloadError(f"model.safetensors of {repo} has sha256 {actual}, expected {expected}; discarded")
        build.mkdir(parents=True)
        shutil.copyfile(snapshot / "model.safetensors", build / "model.safetensors")
        rows = manifest["latent"]["chunk_rows"]
        counts = {s: v["count"] for s, v in manifest["splits"].items()}
        create_latent_arrays(build, counts, manifest["latent"]["dim"], rows,
                             {"name": key, "latent_dim": manifest["latent"]["dim"]})
        cols: dict[str, list] = {k: [] for k in ("names", "rows", "source", "labels", "psnr", "ssim")}
        multi = manifest["labels"]["task"] == "multi-label"
        for split, count in counts.items():
            shard = snapshot / "data" / f"{split}-00000-of-00001.parquet"
            try:
                table = pq.read_table(shard)
            except (OSError, pa.ArrowException) as err:
                raise DownloadError(f"{shard.name} of {repo} is not a readable Parquet file ({err}); discarded") from None
            latents = table["latent"].combine_chunks().flatten().to_numpy().reshape(len(table), -1)
            digest = _hashlib.sha256(np.ascontiguousarray(latents, dtype="<f4").tobytes()).hexdigest()
            if "latents_sha256" not in manifest["splits"][split]:
                raise DownloadError(f"{repo} was exported by an older mednf (no latent digest in {MANIFEST}); "
                                    "it cannot be verified, ask for a new export")
            if len(table) != count or digest != manifest["splits"][split]["latents_sha256"]:
                raise DownloadError(f"split {split!r} of {repo} has {len(table)} rows with latent digest {digest}, "
                                    f"expected {count} rows and {manifest['splits'][split]['latents_sha256']}; "
                                    "discarded")
            for start in range(0, count, rows):
                write_latent_block(build, split, start, latents[start:start + rows])
            labels = (table["label"].combine_chunks().flatten().to_numpy().reshape(count, -1) if multi
                      else table["label"].to_numpy()[:, None])
            for k, value in zip(cols, (split, np.arange(count), table["index"].to_numpy(), labels,
                                       table["psnr"].to_numpy(), table["ssim"].to_numpy())):
                cols[k].append(value)
        write_index(build / INDEX, index_columns(cols["names"], cols["rows"], cols["source"], cols["labels"],
                                                 cols["psnr"], cols["ssim"], multi))
        atomic_write_bytes(build / CARD, render_card(manifest).encode("utf-8"))
        manifest["origin"] = {"hf_repo": repo, "revision": revision, "endpoint": endpoint}
        manifest["files"] = file_table(build)
        check_content(build, manifest, checksums=False)  # file_table just hashed every file
        atomic_write_json(build / MANIFEST, manifest)
        if target.exists():
            shutil.rmtree(target)
        os.replace(build, target)
    finally:
        shutil.rmtree(snapshot, ignore_errors=True)
        shutil.rmtree(build, ignore_errors=True)
    return target
