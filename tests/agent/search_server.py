"""A real HTTP server on 127.0.0.1 that answers like SearxNG, Brave and Tavily with canned results, or
fails on purpose (401, bad JSON, a slow answer). It records every request it gets."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

ROWS = [
    ("Paris - Wikipedia", "https://en.wikipedia.org/wiki/Paris", "Paris is the capital of France."),
    ("France facts", "https://example.org/france", "The capital city is Paris; population 2.1 million."),
]


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: Any


@dataclass
class CannedSearch:
    url: str
    seen: list[Seen] = field(default_factory=list)
    mode: str = "ok"
    """ok | unauthorized | garbage | slow"""


def _payload(path: str) -> dict[str, Any]:
    if path.startswith("/res/v1/web/search"):  # Brave
        return {"web": {"results": [{"title": t, "url": u, "description": d} for t, u, d in ROWS]}}
    return {"results": [{"title": t, "url": u, "content": d} for t, u, d in ROWS]}  # SearxNG, Tavily


@contextmanager
def canned_search() -> Iterator[CannedSearch]:
    state = CannedSearch(url="")

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _answer(self) -> None:
            parts = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            body = json.loads(raw) if raw else None
            state.seen.append(Seen(self.command, parts.path, parse_qs(parts.query), dict(self.headers), body))
            if state.mode == "unauthorized":
                self._send(401, b'{"error": "invalid key"}')
            elif state.mode == "garbage":
                self._send(200, b"<html>not json</html>")
            else:
                if state.mode == "slow":
                    time.sleep(3)
                self._send(200, json.dumps(_payload(parts.path)).encode())

        def _send(self, status: int, data: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = _answer

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
