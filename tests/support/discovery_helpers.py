"""A scripted HTTP server for the discovery tests: responses per request
target, consumed in order (the last one repeats), on a loopback port 0."""
from __future__ import annotations

import contextlib
import http.server
import threading
from collections import defaultdict
from collections.abc import Iterator

from capture.venues.discovery import RetryPolicy

#: No waiting between attempts: the tests are about which pages are fetched.
FAST = RetryPolicy(attempts=4, base_delay=0.0, max_delay=0.0, timeout=10.0)


class Script:
    """Scripted responses per (path, query): a list consumed in order; the
    last entry repeats.  Each entry is (status, body, headers)."""

    def __init__(self) -> None:
        self.routes: dict[str, list[tuple[int, bytes, dict]]] = {}
        self.hits: defaultdict[str, int] = defaultdict(int)
        self.lock = threading.Lock()

    def add(self, target: str, *responses) -> None:
        self.routes[target] = [r if len(r) == 3 else (*r, {}) for r in responses]

    def respond(self, target: str) -> tuple[int, bytes, dict]:
        with self.lock:
            n = self.hits[target]
            self.hits[target] += 1
        rs = self.routes.get(target)
        if not rs:
            return 404, b"not found", {}
        return rs[min(n, len(rs) - 1)]


@contextlib.contextmanager
def scripted_server() -> Iterator[tuple[str, Script]]:
    """``(base URL, script)`` of a server answering from ``script``."""
    script = Script()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            status, body, headers = script.respond(self.path)
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", script
    finally:
        httpd.shutdown()
        httpd.server_close()
        t.join()
