"""Published copies of MedNF datasets: the registry, verified downloads into the cache, and exports.

- :mod:`~mednf.remote.registry` — ``builders/registry.toml`` (shipped; ``$MEDNF_REGISTRY`` replaces it):
  per dataset the Zenodo record / HF repository and the checksums a download must match. A download
  trusts nothing else.
- :mod:`~mednf.remote.install` — the one way a download lands in ``$MEDNF_HOME/<Name>``: under the
  dataset lock (:mod:`mednf.io.lock`, shared with builds and imports; a running build refuses the
  download, a running download is waited for and its result reused), into a scratch folder that is
  verified (sha256 of every file) and then renamed over the target. An unfinished build is never
  replaced; leftovers of dead processes are removed; a failure leaves nothing that looks usable.
- :mod:`~mednf.remote.zenodo` — the record is listed through Zenodo's REST API (its JSON shape checked),
  every link must be ``https://`` on the record's host or the configured mirror (``http://`` only to
  loopback, for tests); files are fetched whole by :func:`mednf.io.http.fetch_verified` (size, sha256
  from the registry, md5 from Zenodo) and unpacked by :mod:`mednf.io.archives` (no absolute paths,
  ``..``, links, devices or pickle files; unpacked size bounded before anything is written). The
  paper's own release (registry ``layout = "official"``, record 10.5281/zenodo.14898708) is unpacked
  the same way and imported by :mod:`~mednf.remote.official_import`, which reads it weights-only.
- :mod:`~mednf.remote.hf` — an HF export fetched file by file through :mod:`mednf.io.http` (the manifest
  first, pinned by the registry, then θ, figures and shards); θ and every split's latents (digest of the raw
  float32 rows) are checked, and mednf's own format is rebuilt with the
  :class:`~mednf.format.writer.DatasetWriter`.
- :mod:`~mednf.tasks.export` — ``<out>/<Name>.tar`` + ``SHA256SUMS`` + registry entry for Zenodo; an HF
  dataset folder (Parquet shards with features, a card whose config is named by the shards' content).

- :mod:`~mednf.remote.lazy` — ``mednf.load(URL)``: a published folder read where it is served (http(s)
  through :mod:`mednf.io.http`, s3/gs through fsspec), manifest and index first, then only the Zarr chunks of the rows
  asked for; :mod:`~mednf.remote.fetch` fetches every file whole and checks it against the manifest's sha256 and
  size, :mod:`~mednf.remote.zarr_store` lets zarr decode chunks through that verified fetch.

Every http(s) read follows one rule (:mod:`mednf.io.http`): allowed schemes and hosts re-checked on each
redirect, never https → http, a bounded size read in pieces, a stall timeout and a total deadline
(``$MEDNF_HTTP_TIMEOUT``, ``$MEDNF_HTTP_DEADLINE``), and no server body echoed in a message.
``$MEDNF_OFFLINE=1`` forbids the network; ``$MEDNF_ZENODO_URL`` / ``$MEDNF_HF_ENDPOINT`` point at mirrors.
Only bytes, JSON, safetensors, Zarr and Parquet are read from a mednf copy; the official release's ``.pt``
files go through torch's weights-only unpickler with an allow-list: nothing is unpickled freely.
"""
