"""``pip install`` inside sessions, through the egress proxy, from the package index of the host's pip
configuration: importable at once, kept for the user's next session, a missing package a quick error.

These tests reach the real package index; where it cannot be reached from this machine they are skipped,
saying so (it is reachable on the project's development machine and in CI).
"""

from __future__ import annotations

import socket
import urllib.parse
from pathlib import Path

import pytest

from thinkbox.sandbox.types import SessionConfig
from thinkbox.service.egress.policy import index_urls

from .egress_support import world

PACKAGE, MODULE = "tomli_w", "tomli_w"
"""A small pure-Python package with no dependencies, not installed in the test environment."""
TIMEOUT = 300


def _index_reachable() -> str | None:
    """Why the index cannot be reached from here, or None."""
    urls = index_urls()
    if not urls:
        return "the host's pip configuration names no http(s) package index"
    parts = urllib.parse.urlsplit(urls[0])
    try:
        socket.create_connection((parts.hostname, parts.port or 443), timeout=10).close()
    except OSError as exc:
        return f"the package index {parts.hostname} cannot be reached from here ({exc})"
    return None


@pytest.fixture(autouse=True)
def _needs_the_index() -> None:
    why = _index_reachable()
    if why is not None:
        pytest.skip(why)


async def test_pip_install_is_importable_at_once_and_in_the_users_next_session(tmp_path: Path) -> None:
    async with world(tmp_path) as (w, _):
        with pytest.raises(ImportError):
            __import__(MODULE)  # not in the test's own environment: the session's install is its own
        async with w.session("s_0000000000000001") as first:
            installed = await first.execute(
                f"!pip install {PACKAGE}\nimport {MODULE}\nprint({MODULE}.__file__)", timeout=TIMEOUT
            )
            cached = await first.execute(
                "!pip cache dir\nimport os\n"
                "print('writable' if os.access('/workspace/.pip-cache', os.W_OK) else '-')",
                timeout=TIMEOUT,
            )
        async with w.session("s_0000000000000002") as second:
            again = await second.execute(
                f"import {MODULE}\nprint({MODULE}.dumps({{'a': 1}}).strip())", timeout=TIMEOUT
            )
    assert installed.ok, installed
    assert "Successfully installed" in installed.stdout, installed.stdout
    assert installed.stdout.strip().endswith(f"/workspace/.packages/site/{MODULE}/__init__.py")
    assert again.ok and again.stdout.strip() == "a = 1", again
    # the user's own pip cache, writable (what pip stores there depends on the index's caching headers)
    assert cached.ok and cached.stdout.split() == ["/workspace/.pip-cache", "writable"], cached
    hosts = {e.host for _, e in w.events}
    assert all(not e.refused for _, e in w.events), w.events
    assert hosts, "pip's requests went through the proxy"


async def test_pip_in_a_shell_session_and_a_missing_package_fails_quickly(tmp_path: Path) -> None:
    async with world(tmp_path) as (w, _):
        config = await w.egress.session_config("s_0000000000000003", w.owner, SessionConfig(language="sh"))
        shell = await w.backend.create_session(config)
        try:
            missing = await shell.execute("pip install tbx-no-such-package-0f3c9", timeout=TIMEOUT)
            which = await shell.execute("command -v pip; python -c 'import sys; print(sys.prefix)'")
        finally:
            await shell.close()
            await w.egress.detach("s_0000000000000003")
    assert missing.exit_status not in (0, None)
    assert "No matching distribution found for tbx-no-such-package-0f3c9" in missing.stdout + missing.stderr
    assert not missing.timed_out  # pip's own error, not a hang (PIP_RETRIES, PIP_TIMEOUT are small)
    assert which.ok and "/pip" in which.stdout
