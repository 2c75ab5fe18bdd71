"""Start a kernel in a freshly exec'd interpreter: ``python -m thinkbox.sandbox.launch FD OPTIONS_JSON``.

Used by backends that exec a new interpreter per session (bwrap, docker) rather than forking the zygote.
Stdlib only, like the kernel: inside a sandbox only the kernel's own files are present.
"""

from __future__ import annotations

import json
import socket
import sys


def main(argv: list[str]) -> None:
    fd = int(argv[1])
    options = json.loads(argv[2]) if len(argv) > 2 else {}
    from thinkbox.sandbox import kernel

    if options.get("preload", True):
        kernel.preload()
    sock = socket.socket(fileno=fd)
    kernel.serve(sock, options)


if __name__ == "__main__":
    main(sys.argv)
