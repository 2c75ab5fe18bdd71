"""A small real HTTP server on 127.0.0.1 that speaks the OpenAI chat-completions protocol (stdlib only).

It streams server-sent events like the real API: one chunk per piece of the reply, a finish chunk, a usage
chunk when ``stream_options.include_usage`` is asked, then ``data: [DONE]``. Faults are set per test:
queued status codes, a wrong key, unknown models, refused request fields, a delay before answering.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class ChatServerState:
    models: list[str] = field(default_factory=lambda: ["test-model", "other-model"])
    api_key: str | None = None
    """When set, requests must carry ``Authorization: Bearer <api_key>``."""
    reply: list[str] = field(default_factory=lambda: ["Hel", "lo", ", ", "world"])
    faults: list[int] = field(default_factory=list)
    """Status codes answered (in order) before the next requests succeed."""
    refuse: set[str] = field(default_factory=set)
    """Request fields answered with 400: ``json_schema``, ``strict`` (a strict json_schema), ``json_object``,
    ``stream_options``."""
    vague_400: bool = False
    """Refusals say only "bad request" instead of naming the field."""
    delay_s: float = 0.0
    """Pause before the response headers."""
    delays: list[float] = field(default_factory=list)
    """Pauses (in order) before the headers of the next requests; ``delay_s`` after them."""
    chunk_delay_s: float = 0.0
    """Pause before each streamed chunk."""
    drop_after: int | None = None
    """Close the connection, mid-stream, after this many content chunks."""
    context_chars: int | None = None
    """Prompts longer than this (characters of all messages) get a 400 like OpenAI's context error."""
    requests: list[dict[str, Any]] = field(default_factory=list)
    models_calls: int = 0


class ChatServer:
    def __init__(self) -> None:
        self.state = ChatServerState()
        state = self.state

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _json(self, status: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _error(self, status: int, message: str, code: str | None = None) -> None:
                self._json(
                    status, {"error": {"message": message, "type": "invalid_request_error", "code": code}}
                )

            def _authorized(self) -> bool:
                if state.api_key is None:
                    return True
                if self.headers.get("Authorization") == f"Bearer {state.api_key}":
                    return True
                self._error(401, "Incorrect API key provided", "invalid_api_key")
                return False

            def do_GET(self) -> None:
                if self.path.rstrip("/") != "/v1/models":
                    self._error(404, f"no route {self.path}")
                    return
                state.models_calls += 1
                if not self._authorized():
                    return
                data = [{"id": m, "object": "model", "created": 0, "owned_by": "test"} for m in state.models]
                self._json(200, {"object": "list", "data": data})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(length) or b"{}")
                if self.path.rstrip("/") != "/v1/chat/completions":
                    self._error(404, f"no route {self.path}")
                    return
                state.requests.append(body)
                delay = state.delays.pop(0) if state.delays else state.delay_s
                if delay:
                    time.sleep(delay)
                if not self._authorized():
                    return
                if state.faults:
                    status = state.faults.pop(0)
                    self._error(status, f"injected fault {status}")
                    return
                size = sum(len(str(m.get("content", ""))) for m in body.get("messages", []))
                if state.context_chars is not None and size > state.context_chars:
                    message = (
                        f"This model's maximum context length is {state.context_chars} tokens. However, your "
                        f"messages resulted in {size} tokens. Please reduce the length of the messages."
                    )
                    self._error(400, message, "context_length_exceeded")
                    return
                if body.get("model") not in state.models:
                    self._error(404, f"The model `{body.get('model')}` does not exist", "model_not_found")
                    return
                fmt = (body.get("response_format") or {}).get("type")
                strict = bool((body.get("response_format") or {}).get("json_schema", {}).get("strict"))
                for name, present in (
                    ("json_schema", fmt == "json_schema"),
                    ("strict", fmt == "json_schema" and strict),
                    ("json_object", fmt == "json_object"),
                    ("stream_options", "stream_options" in body),
                ):
                    if present and name in state.refuse:
                        self._error(400, "bad request" if state.vague_400 else f"unsupported field: {name}")
                        return
                if body.get("stream"):
                    self._stream(body)
                else:
                    text = "".join(state.reply)
                    self._json(200, _completion(body, text))

            def _stream(self, body: dict[str, Any]) -> None:
                try:
                    self._stream_chunks(body)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout tests)
                    self.close_connection = True

            def _stream_chunks(self, body: dict[str, Any]) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Cache-Control", "no-cache")
                self.send_header("Connection", "close")
                self.end_headers()
                base = {
                    "id": "chatcmpl-1",
                    "object": "chat.completion.chunk",
                    "created": 0,
                    "model": body["model"],
                }

                def send(payload: Any) -> None:
                    if state.chunk_delay_s:
                        time.sleep(state.chunk_delay_s)
                    raw = payload if isinstance(payload, str) else json.dumps(payload)
                    self.wfile.write(f"data: {raw}\n\n".encode())
                    self.wfile.flush()

                first = {"role": "assistant", "content": ""}
                send({**base, "choices": [{"index": 0, "delta": first, "finish_reason": None}]})
                for index, piece in enumerate(state.reply):
                    if state.drop_after is not None and index >= state.drop_after:
                        state.drop_after = None
                        self.wfile.flush()
                        self.connection.shutdown(socket.SHUT_RDWR)
                        self.close_connection = True
                        return
                    send(
                        {
                            **base,
                            "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}],
                        }
                    )
                send({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
                if (body.get("stream_options") or {}).get("include_usage"):
                    prompt = sum(len(str(m.get("content", ""))) for m in body["messages"])
                    usage = {
                        "prompt_tokens": prompt,
                        "completion_tokens": len(state.reply),
                        "total_tokens": 0,
                    }
                    usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
                    send({**base, "choices": [], "usage": usage})
                send("[DONE]")
                self.close_connection = True

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, args=(0.05,), name="chat-server", daemon=True
        )

    @property
    def base_url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host!s}:{port}/v1"

    def __enter__(self) -> ChatServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


def _completion(body: dict[str, Any], text: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 0,
        "model": body["model"],
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
