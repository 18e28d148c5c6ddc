"""A read-only Zarr v3 store over one remote array folder, whose every file is verified before zarr sees it.

:class:`VerifiedStore` implements zarr's :class:`zarr.abc.store.Store` for ``latents.zarr/<split>/`` of a
remote dataset: ``get(key)`` fetches the whole file ``latents.zarr/<split>/<key>`` through
:class:`~mednf.remote.fetch.RemoteFolder` (size and sha256 against the manifest) and only then hands the
bytes to zarr, which decodes them with the codecs, chunk grid and chunk key encoding the array's
``zarr.json`` declares (nothing about them is assumed here). A key the manifest does not list does not
exist (zarr reads the fill value, NaN, which the reader refuses), so probing zarr does is answered without a
request. Byte-range requests (sharded arrays) are served from the whole verified file: a part of a file
cannot be checked against the file's sha256.

Library: zarr (its Store ABC is the documented extension point); fetches run in threads
(``asyncio.to_thread``) so zarr's concurrent chunk reads become concurrent transfers.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable

from zarr.abc.store import ByteRequest, OffsetByteRequest, RangeByteRequest, Store, SuffixByteRequest
from zarr.core.buffer import Buffer, BufferPrototype

from mednf.format.manifest import FileEntry
from mednf.remote.fetch import RemoteFolder


class VerifiedStore(Store):
    """Read-only store of the files ``<prefix>/…`` of ``folder`` listed in ``files`` (see the module docstring)."""

    supports_writes = False
    supports_deletes = False
    supports_partial_writes = False
    supports_listing = True

    def __init__(self, folder: RemoteFolder, prefix: str, files: dict[str, FileEntry]) -> None:
        super().__init__(read_only=True)
        self.folder = folder
        self.prefix = prefix.rstrip("/") + "/"
        self.entries = {rel[len(self.prefix):]: entry for rel, entry in files.items() if rel.startswith(self.prefix)}

    def url(self, key: str) -> str:
        """The URL of ``key``'s file."""
        return self.folder.file_url(self.prefix + key)

    def fetch(self, key: str) -> bytes | None:
        """The verified bytes of ``key``, None if the manifest does not list it (blocking)."""
        entry = self.entries.get(key)
        return None if entry is None else self.folder.fetch(self.prefix + key, entry)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, VerifiedStore) and (other.folder.url, other.prefix) == (self.folder.url, self.prefix)

    __hash__ = None  # type: ignore[assignment]

    async def get(self, key: str, prototype: BufferPrototype, byte_range: ByteRequest | None = None) -> Buffer | None:
        """The verified file of ``key`` (the part ``byte_range`` asks for), None if the manifest does not list it."""
        data = await asyncio.to_thread(self.fetch, key)
        if data is None:
            return None
        return prototype.buffer.from_bytes(data[_span(byte_range, len(data))])

    async def get_partial_values(self, prototype: BufferPrototype,
                                 key_ranges: Iterable[tuple[str, ByteRequest | None]]) -> list[Buffer | None]:
        """:meth:`get` of every ``(key, byte range)``, concurrently, in order."""
        return list(await asyncio.gather(*(self.get(key, prototype, span) for key, span in key_ranges)))

    async def exists(self, key: str) -> bool:
        """Whether the manifest lists ``key`` (no request)."""
        return key in self.entries

    async def set(self, key: str, value: Buffer) -> None:
        """Refused: the store is read-only."""
        self._check_writable()

    async def delete(self, key: str) -> None:
        """Refused: the store is read-only."""
        self._check_writable()

    async def list(self) -> AsyncIterator[str]:
        """Every listed key, sorted."""
        for key in sorted(self.entries):
            yield key

    async def list_prefix(self, prefix: str) -> AsyncIterator[str]:
        """The listed keys that start with ``prefix``, sorted."""
        for key in sorted(self.entries):
            if key.startswith(prefix):
                yield key

    async def list_dir(self, prefix: str) -> AsyncIterator[str]:
        """The names directly below the folder ``prefix`` (files and subfolders), sorted."""
        prefix = prefix.rstrip("/") + "/" if prefix else ""
        children = {key[len(prefix):].split("/", 1)[0] for key in self.entries if key.startswith(prefix)}
        for child in sorted(children):
            yield child


def _span(request: ByteRequest | None, size: int) -> slice:
    """The slice of a file of ``size`` bytes that ``request`` asks for."""
    if request is None:
        return slice(None)
    if isinstance(request, RangeByteRequest):
        return slice(request.start, request.end)
    if isinstance(request, OffsetByteRequest):
        return slice(request.offset, None)
    if isinstance(request, SuffixByteRequest):
        return slice(max(size - request.suffix, 0), None)
    raise TypeError(f"unknown byte request {request!r}")
