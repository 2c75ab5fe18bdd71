"""Start a kernel in a freshly exec'd interpreter:
``python -m thinkbox.sandbox.inside.launch FD OPTIONS_JSON``.

``FD`` is an inherited, connected socket; a path instead (docker) is a Unix socket the host listens on,
connected to before the preload so the host learns at once that the interpreter started.

Used by backends that exec a new interpreter per session (bwrap, docker) rather than forking the zygote.
Stdlib only, like the kernel: inside a sandbox only the kernel's own files are present.
"""

from __future__ import annotations

import json
import os
import socket
import sys


def main(argv: list[str]) -> None:
    target = argv[1]
    options = json.loads(argv[2]) if len(argv) > 2 else {}
    keep = int(target) if target.isdigit() else 2
    # nothing but stdio and the socket: bwrap hands on what it was given (``--userns FD``)
    os.closerange(3, keep)
    os.closerange(keep + 1, os.sysconf("SC_OPEN_MAX"))
    if target.isdigit():
        sock = socket.socket(fileno=int(target))
    else:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(target)
    from thinkbox.sandbox.inside import kernel

    if options.get("preload", True):
        kernel.preload()
    kernel.serve(sock, options)


if __name__ == "__main__":
    main(sys.argv)
