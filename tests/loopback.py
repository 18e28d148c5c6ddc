"""A real HTTP server on 127.0.0.1 for download tests (no mocks): serves files from a dict, with faults.

``files`` maps a URL path to bytes; ``faults`` maps a path to one of:
``"truncate"`` (announce the full Content-Length, send half), ``"error"`` (HTTP 500),
``"garbage"`` (same length, other bytes), ``"no-length"`` (no Content-Length: the body ends when the
connection closes). ``redirects`` maps a path to a Location sent with 302; ``pauses`` maps a path to seconds
to wait after the first half of the body (a transfer in progress, for concurrency and kill tests).
``requests`` lists every request in order; :meth:`wait_for` waits until a path has been requested.
"""

from __future__ import annotations

import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Self


class ServedThread:
    """A ThreadingHTTPServer on 127.0.0.1 (a free port) serving in a thread while used as a context manager."""

    def serve(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

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


class Loopback(ServedThread):
    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.faults: dict[str, str] = {}
        self.requests: list[str] = []
        self.headers: dict[str, dict[str, str]] = {}  # extra response headers per path
        self.redirects: dict[str, str] = {}
        self.pauses: dict[str, float] = {}
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep test output clean
                pass

            def do_HEAD(self) -> None:
                self.do_GET(head=True)

            def do_GET(self, head: bool = False) -> None:
                path = self.path.split("?", 1)[0]
                owner.requests.append(("HEAD " if head else "") + path)
                try:
                    self._answer(path, head)
                except (BrokenPipeError, ConnectionResetError):  # the client went away (killed): fine
                    self.close_connection = True

            def _answer(self, path: str, head: bool) -> None:
                if path in owner.redirects:
                    self.send_response(302)
                    self.send_header("Location", owner.redirects[path])
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
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
                if fault != "no-length":
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
                if path in owner.pauses:
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    time.sleep(owner.pauses[path])
                    body = body[len(body) // 2:]
                self.wfile.write(body)
                if fault == "no-length":
                    self.close_connection = True

        self.serve(Handler)

    def wait_for(self, path: str, timeout: float = 30.0) -> None:
        """Block until ``path`` has been requested (raise after ``timeout`` seconds)."""
        deadline = time.monotonic() + timeout
        while path not in self.requests:
            if time.monotonic() > deadline:
                raise AssertionError(f"{path} was not requested within {timeout} s (requests: {self.requests})")
            time.sleep(0.01)



class RawSocketServer:
    """A server on 127.0.0.1 (a free port) below HTTP: each accepted connection is handed, as a raw socket, to
    :meth:`handle` in a thread of its own, for answers no well-behaved server gives (drips, drops, forged
    headers). ``stopped`` is set when the ``with`` block ends; every connection thread is joined then."""

    def __init__(self) -> None:
        self.stopped = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.1)
        self.threads: list[threading.Thread] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.listener.getsockname()[1]}"

    def handle(self, sock: socket.socket) -> None:
        """Answer one connection (the subclass's protocol); the socket is closed afterwards."""
        raise NotImplementedError

    def _accept(self) -> None:
        while not self.stopped.is_set():
            try:
                sock, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            worker = threading.Thread(target=self._serve, args=(sock,), daemon=True)
            worker.start()
            self.threads.append(worker)

    def _serve(self, sock: socket.socket) -> None:
        with sock:
            self.handle(sock)

    def __enter__(self) -> Self:
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.stopped.set()
        self.listener.close()
        for worker in self.threads:
            worker.join(timeout=5)
