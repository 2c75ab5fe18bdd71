"""The session's HTTP proxy address: 127.0.0.1:3128 in the session's own network namespace, relayed byte
for byte to the host's egress proxy through the Unix socket mounted into the session.

A session has no network interface but loopback, so ``HTTP_PROXY=http://127.0.0.1:3128`` (what
``requests``, ``httpx``, ``urllib``, pip and curl understand) must lead somewhere: here. The relay knows
nothing of HTTP; the host's proxy (``thinkbox.service.egress``) decides everything. It runs in a process
of its own, forked by the kernel as the session starts, before any user code, so that it survives the
user's code being busy; it is single-threaded (one ``selectors`` loop), holds no secret and dies with the
session. Stdlib only, like the rest of ``inside``.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import socket
from typing import Any

PORT = 3128
ENV_SOCKET = "THINKBOX_EGRESS_SOCKET"
"""The environment variable naming the mounted Unix socket of the host's proxy."""
CHUNK = 256 * 1024


def listen(port: int = PORT) -> socket.socket | None:
    """The relay's listening socket, or None when the address is taken (a relay of an earlier interpreter
    of the same session still serves it)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("127.0.0.1", port))
    except OSError:
        sock.close()
        return None
    sock.listen(128)
    return sock


def start(env: dict[str, str]) -> None:
    """Fork the relay when the session has an egress socket; return at once in the kernel."""
    target = env.get(ENV_SOCKET)
    if not target:
        return
    listener = listen()
    if listener is None:
        return
    pid = os.fork()
    if pid:
        listener.close()
        return
    try:  # the child: nothing of the kernel's (its streams are pipes the host reads) stays open
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        keep = listener.fileno()
        os.closerange(3, keep)
        os.closerange(keep + 1, 65536)
        serve(listener, target)
    finally:
        os._exit(0)


class _Pipe:
    """One direction of a relayed connection: bytes read from ``src`` wait in ``buf`` for ``dst``."""

    def __init__(self, src: socket.socket, dst: socket.socket) -> None:
        self.src, self.dst = src, dst
        self.buf = b""
        self.eof = False


def serve(listener: socket.socket, target: str) -> None:
    """Accept connections on ``listener``; relay each to a new connection to the Unix socket ``target``."""
    sel = selectors.DefaultSelector()
    listener.setblocking(False)
    sel.register(listener, selectors.EVENT_READ, None)
    pipes: dict[socket.socket, list[_Pipe]] = {}

    def update(sock: socket.socket) -> None:
        mask = 0
        for pipe in pipes.get(sock, ()):
            if pipe.src is sock and not pipe.eof and len(pipe.buf) < CHUNK:
                mask |= selectors.EVENT_READ
            if pipe.dst is sock and pipe.buf:
                mask |= selectors.EVENT_WRITE
        key: Any = sel.get_map().get(sock)
        if mask and key is None:
            sel.register(sock, mask, sock)
        elif mask and key.events != mask:
            sel.modify(sock, mask, sock)
        elif not mask and key is not None:
            sel.unregister(sock)

    def close(sock: socket.socket) -> None:
        pair = pipes.get(sock)
        if pair is None:
            return
        for s in (pair[0].src, pair[0].dst):
            pipes.pop(s, None)
            with contextlib.suppress(KeyError, ValueError):
                sel.unregister(s)
            s.close()

    while True:
        for key, events in sel.select():
            if key.data is None:
                _accept(listener, target, pipes)
                for sock in list(pipes):
                    update(sock)
                continue
            sock = key.data
            if sock not in pipes:
                continue
            try:
                for pipe in list(pipes[sock]):
                    if events & selectors.EVENT_READ and pipe.src is sock and not pipe.eof:
                        data = sock.recv(CHUNK)
                        if data:
                            pipe.buf += data
                        else:
                            pipe.eof = True
                    if events & selectors.EVENT_WRITE and pipe.dst is sock and pipe.buf:
                        sent = sock.send(pipe.buf)
                        pipe.buf = pipe.buf[sent:]
                    if pipe.eof and not pipe.buf:
                        with contextlib.suppress(OSError):
                            pipe.dst.shutdown(socket.SHUT_WR)
            except (BlockingIOError, InterruptedError):
                pass
            except OSError:
                close(sock)
                continue
            both = pipes.get(sock, [])
            if both and all(p.eof and not p.buf for p in both):
                close(sock)
                continue
            for s in {sock, *(p.dst for p in both), *(p.src for p in both)}:
                if s in pipes:
                    update(s)


def _accept(listener: socket.socket, target: str, pipes: dict[socket.socket, list[_Pipe]]) -> None:
    try:
        client, _ = listener.accept()
    except (BlockingIOError, InterruptedError):
        return
    upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        upstream.connect(target)
    except OSError:
        upstream.close()
        client.close()
        return
    client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    for sock in (client, upstream):
        sock.setblocking(False)
    up, down = _Pipe(client, upstream), _Pipe(upstream, client)
    pipes[client] = [up, down]
    pipes[upstream] = [up, down]
