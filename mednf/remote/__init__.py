"""Published copies of MedNF datasets: export for Zenodo, verified download from Zenodo into the cache.

**Registry** (``builders/registry.toml``, shipped; ``$MEDNF_REGISTRY`` replaces it): per dataset the
Zenodo record id and the sha256 + size of each file of the record. A download trusts nothing else.

**Download** (:func:`download_zenodo`): list the record through Zenodo's REST API
(``GET {base}/api/records/{id}``), fetch each registry file whole (HTTP timeout, progress bar) to a
temporary name, check size, then sha256 (registry) and md5 (Zenodo's own checksum), then rename. The
archive is unpacked into a temporary folder (tar entries with absolute paths, ``..``, links or devices
are refused), the dataset is verified against its manifest (sha256 of every file), and only then moved
to ``$MEDNF_HOME/<Name>``. Any failure leaves nothing that looks usable; the next call starts again.
``$MEDNF_OFFLINE=1`` forbids the network. ``$MEDNF_ZENODO_URL`` replaces ``https://zenodo.org``.

**The paper's release** (registry ``layout = "official"``, record 10.5281/zenodo.14898708) holds the
official research code's layout, not this one: the files whose names contain the dataset's name are
fetched and checked against Zenodo's md5 (no sha256 is published), unpacked (zip or tar, same refusals, the
``.pt`` files allowed) and imported by :mod:`mednf.remote.official_import`, which reads them weights-only.

**Export** (:func:`export_zenodo`): ``<out>/<Name>.tar`` (the manifest's files, uncompressed: the latents
are already compressed) plus ``SHA256SUMS`` and the registry entry to paste, for a maintainer to upload.
:func:`export_hf` writes an HF dataset repository (Parquet + card); :func:`download_hf` fetches one with
``huggingface_hub.snapshot_download`` and verifies it against the manifest, which the registry pins by
sha256 (``manifest_sha256``) when the entry has one.

Libraries: urllib (stdlib) for two plain GETs with timeouts, tarfile/zipfile for the archives. Only
bytes, JSON, safetensors, Zarr and Parquet are read from a mednf copy; the official release's ``.pt``
files go through torch's weights-only unpickler with an allow-list: nothing is unpickled freely.
"""
