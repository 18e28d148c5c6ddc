"""A real threaded HTTP server on 127.0.0.1 that serves a directory and honours ``Range`` (no mocks).

- ``GET`` → 200 with the whole file, or with ``Range: bytes=a-b`` / ``bytes=a-`` / ``bytes=-n`` → 206 and
  ``Content-Range``; a range that is malformed, multi-part or outside the file → 416 (``bytes */size``).
- ``HEAD`` → the headers of the ``GET`` (``Content-Length``, ``Accept-Ranges: bytes``), no body.
- Faults by URL path: ``replaced`` (serve these bytes instead of the file's: a tampered copy), ``status``
  (answer with this HTTP status, e.g. 500), ``stalls`` (sleep this many seconds before answering).
- ``requests`` records every request as ``(method, path, range header or None)``; :meth:`fetched` lists
  the paths of GETs, so tests can assert which files a read needed.

Library: :mod:`http.server` (``ThreadingHTTPServer``); its ``SimpleHTTPRequestHandler`` ignores ``Range``,
hence this handler.
"""

from __future__ import annotations

import re
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler
from pathlib import Path

from loopback import ServedThread

_RANGE = re.compile(r"bytes=(\d*)-(\d*)$")


def parse_range(header: str, size: int) -> tuple[int, int] | None:
    """``(start, stop)`` (stop exclusive) of a single-part ``Range`` header, or None if unsatisfiable."""
    match = _RANGE.fullmatch(header.strip())
    if not match or match.groups() == ("", ""):
        return None
    first, last = match.groups()
    if first == "":  # suffix: the last n bytes
        n = int(last)
        return (max(size - n, 0), size) if n > 0 and size > 0 else None
    start = int(first)
    stop = min(int(last) + 1, size) if last else size
    return (start, stop) if start < size and start < stop else None


class RangeServer(ServedThread):
    """Serves ``root`` at :attr:`url` while used as a context manager (see the module docstring)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()
        self.requests: list[tuple[str, str, str | None]] = []
        self.replaced: dict[str, bytes] = {}
        self.status: dict[str, int] = {}
        self.stalls: dict[str, float] = {}
        self._lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as real servers do
            disable_nagle_algorithm = True  # else headers and body, written apart, wait ~40 ms on delayed ACKs

            def log_message(self, *args) -> None:  # keep test output clean
                pass

            def do_HEAD(self) -> None:
                self._serve(head=True)

            def do_GET(self) -> None:
                self._serve(head=False)

            def _serve(self, head: bool) -> None:
                path = urllib.parse.unquote(self.path.split("?", 1)[0])
                header = self.headers.get("Range")
                with owner._lock:
                    owner.requests.append(("HEAD" if head else "GET", path, header))
                try:
                    self._answer(path, header, head)
                except (BrokenPipeError, ConnectionResetError):  # the client went away: fine
                    self.close_connection = True

            def _empty(self, code: int, headers: dict[str, str] | None = None) -> None:
                self.send_response(code)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def _answer(self, path: str, header: str | None, head: bool) -> None:
                if path in owner.stalls:
                    time.sleep(owner.stalls[path])
                if path in owner.status:
                    return self._empty(owner.status[path])
                body = owner.body(path)
                if body is None:
                    return self._empty(404)
                start, stop, code = 0, len(body), 200
                if header is not None:
                    span = parse_range(header, len(body))
                    if span is None:
                        return self._empty(416, {"Content-Range": f"bytes */{len(body)}"})
                    (start, stop), code = span, 206
                self.send_response(code)
                self.send_header("Content-Length", str(stop - start))
                self.send_header("Accept-Ranges", "bytes")
                self.send_header("Content-Type", "application/octet-stream")
                if code == 206:
                    self.send_header("Content-Range", f"bytes {start}-{stop - 1}/{len(body)}")
                self.end_headers()
                if not head:
                    self.wfile.write(body[start:stop])

        self.serve(Handler)
        self.server.daemon_threads = True

    def body(self, path: str) -> bytes | None:
        """The bytes served at URL ``path`` (a replacement, or the file under ``root``), None if absent."""
        if path in self.replaced:
            return self.replaced[path]
        file = (self.root / path.lstrip("/")).resolve()
        if not file.is_relative_to(self.root) or not file.is_file():
            return None
        return file.read_bytes()

    def fetched(self, prefix: str = "") -> list[str]:
        """Paths of the GET requests so far (those starting with ``prefix``), in order."""
        with self._lock:
            return [path for method, path, _ in self.requests if method == "GET" and path.startswith(prefix)]

    def clear(self) -> None:
        with self._lock:
            self.requests.clear()

