"""What runs inside the sandbox: the kernel (:mod:`.kernel`), the framing (:mod:`.wire`) and the launcher
of a freshly exec'd interpreter (:mod:`.launch`).

Standard library only (a test checks every Python file of :data:`FILES`; kernel.js uses Node's built-in
modules only): backends that exec a new interpreter
copy or bind exactly these files into the sandbox, where nothing else of thinkbox exists.
"""

from __future__ import annotations

import shutil
from pathlib import Path

FILES = (
    "sandbox/__init__.py",
    "sandbox/inside/__init__.py",
    "sandbox/inside/kernel.py",
    "sandbox/inside/namespace.py",
    "sandbox/inside/wire.py",
    "sandbox/inside/launch.py",
    "sandbox/inside/engines.py",
    "sandbox/inside/display.py",
    "sandbox/inside/relay.py",
    "sandbox/inside/kernel.js",
)
"""The in-sandbox files, relative to the ``thinkbox`` package."""


def install(dest: Path) -> Path:
    """Copy :data:`FILES` into ``dest/thinkbox`` (with an empty ``thinkbox/__init__.py``); return it."""
    package = Path(__file__).resolve().parents[2]
    root = dest / "thinkbox"
    root.mkdir(parents=True, exist_ok=True)
    (root / "__init__.py").write_text("")
    for rel in FILES:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(package / rel, root / rel)
    return root
