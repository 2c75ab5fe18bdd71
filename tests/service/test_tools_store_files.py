"""The tool store's files under concurrency: the service's worker threads prepare sessions of one tenant
at the same time (20 runs at once in ``thinkbox bench service`` failed 4 runs with FileNotFoundError when
two threads renamed the same temporary file)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from thinkbox.sandbox.types import SessionConfig
from thinkbox.service.tools import inside
from thinkbox.service.tools.store import ToolStore


def test_many_threads_prepare_one_tenants_folders_at_once(tmp_path: Path) -> None:
    for attempt in range(30):  # the race needs two threads inside the write at once: try it often
        _prepare_at_once(tmp_path / str(attempt))


def _prepare_at_once(tmp_path: Path) -> None:
    store = ToolStore(Any, Any, tmp_path, SessionConfig(), timeout_s=5)  # type: ignore[arg-type]
    start, errors = threading.Barrier(24), []

    def prepare(k: int) -> None:
        start.wait()
        try:
            store.mounts("acme", f"user{k}")
        except Exception as exc:  # the assertion below names it
            errors.append(repr(exc))

    threads = [threading.Thread(target=prepare, args=(k,)) for k in range(24)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    package = tmp_path / "acme" / "shared" / "tools"
    assert (package / "__init__.py").read_text() == Path(inside.__file__).read_text()
    assert sorted(p.name for p in package.iterdir()) == ["__init__.py"], "a temporary file was left behind"
