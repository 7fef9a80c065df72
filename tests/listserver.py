"""A list server on 127.0.0.1 for the tests: serves bytes with an ETag, answers conditional
requests with 304, and can fail, stall or gzip on demand. It records every request."""

from __future__ import annotations

import gzip
import hashlib
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Page:
    body: bytes = b""
    status: int = 200
    gzip: bool = False
    stall_s: float = 0.0
    modified: float = field(default_factory=time.time)

    @property
    def etag(self) -> str:
        return '"' + hashlib.sha256(self.body).hexdigest()[:16] + '"'


@dataclass
class ListServer:
    """Pages by path; `requests` holds (path, headers) of every request seen."""

    port: int = 0
    pages: dict[str, Page] = field(default_factory=dict)
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def put(self, path: str, body: str | bytes, **options: object) -> str:
        data = body.encode() if isinstance(body, str) else body
        self.pages[path] = Page(data, **options)  # type: ignore[arg-type]
        return self.url(path)


def _handler(site: ListServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            site.requests.append((self.path, {k.lower(): v for k, v in self.headers.items()}))
            page = site.pages.get(self.path)
            if page is None:
                self.send_error(404)
                return
            if page.stall_s:
                time.sleep(page.stall_s)
            if page.status != 200:
                self.send_error(page.status)
                return
            if self.headers.get("If-None-Match") == page.etag:
                self.send_response(304)
                self.send_header("ETag", page.etag)
                self.end_headers()
                return
            body = gzip.compress(page.body) if page.gzip else page.body
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("ETag", page.etag)
            self.send_header("Last-Modified", formatdate(page.modified, usegmt=True))
            if page.gzip:
                self.send_header("Content-Encoding", "gzip")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler


@contextmanager
def serve_lists() -> Iterator[ListServer]:
    site = ListServer()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(site))
    server.daemon_threads = True
    site.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield site
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
