"""A real HTTP server on 127.0.0.1 for download tests (no mocks): serves files from a dict, with faults.

``files`` maps a URL path to bytes; ``faults`` maps a path to one of:
``"truncate"`` (announce the full Content-Length, send half), ``"error"`` (HTTP 500),
``"garbage"`` (same length, other bytes).
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Self


class Loopback:
    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.faults: dict[str, str] = {}
        self.requests: list[str] = []
        self.headers: dict[str, dict[str, str]] = {}  # extra response headers per path
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep test output clean
                pass

            def do_HEAD(self) -> None:
                self.do_GET(head=True)

            def do_GET(self, head: bool = False) -> None:
                path = self.path.split("?", 1)[0]
                owner.requests.append(("HEAD " if head else "") + path)
                body = owner.files.get(path)
                fault = owner.faults.get(path)
                if body is None or fault == "error":
                    self.send_response(404 if body is None else 500)
                    if body is None:
                        self.send_header("X-Error-Code", "EntryNotFound")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                for name, value in owner.headers.get(path, {}).items():
                    self.send_header(name, value)
                self.end_headers()
                if head:
                    return
                if fault == "truncate":
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                if fault == "garbage":
                    body = bytes(len(body))
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> Self:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
