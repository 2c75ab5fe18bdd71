"""The service keeps its data from the host's other accounts: a DATA_DIR it creates is mode 0700, and the
SQLite database it creates (every tenant's questions, answers, events and tools) is 0600, as are the
files SQLite puts beside it (``-wal``, ``-shm``). A DATA_DIR the operator made keeps the operator's mode.

A real service started over a real SQLite file (:func:`.service_support.running_server`), under the
usual umask 022, which alone would give 0755 and 0644.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path

from .service_support import running_server


@contextlib.contextmanager
def _umask(mask: int) -> Iterator[None]:
    before = os.umask(mask)
    try:
        yield
    finally:
        os.umask(before)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _database_files(data_dir: Path) -> dict[str, int]:
    """The modes of the database and its siblings; the WAL and shared-memory files must be there (the
    service is running, in WAL mode, and has written), or the test would check nothing about them."""
    files = {p.name: _mode(p) for p in data_dir.glob("thinkbox.db*")}
    assert {"thinkbox.db", "thinkbox.db-wal", "thinkbox.db-shm"} <= set(files), files
    return files


def test_a_data_dir_the_service_creates_is_private_and_so_is_its_database(tmp_path: Path) -> None:
    data_dir = tmp_path / "made" / "data"
    with _umask(0o022), running_server(data_dir) as server, server.client(server.alice) as client:
        client.get("/v1/secrets").raise_for_status()  # the service answers
        # sessions still work under a private DATA_DIR: their folders are binds of folders below it
        created = client.post("/v1/sessions")
        assert created.status_code == 201, created.text
        code = (
            "import os, sys\n"
            "open('mine.txt', 'w').write('a'); open('../ours.txt', 'w').write('b')\n"
            "site = [p for p in sys.path if p.startswith('/workspace/.packages')]\n"
            "print(open('mine.txt').read() + open('../ours.txt').read(), os.access(site[0], os.W_OK))"
        )
        ran = client.post(f"/v1/sessions/{created.json()['id']}/execute", json={"code": code})
        assert ran.status_code == 200 and ran.json()["error"] is None, ran.text
        assert ran.json()["stdout"].split() == ["ab", "True"], ran.text
        files = _database_files(data_dir)
        folder = _mode(data_dir)
    assert folder == 0o700, oct(folder)
    assert files == dict.fromkeys(files, 0o600), {k: oct(v) for k, v in files.items()}


def test_a_data_dir_the_operator_made_keeps_its_mode(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    data_dir.chmod(0o750)  # the operator's choice, e.g. a group that takes backups
    with _umask(0o022), running_server(data_dir):
        files = _database_files(data_dir)
    assert _mode(data_dir) == 0o750
    assert files == dict.fromkeys(files, 0o600), {k: oct(v) for k, v in files.items()}
