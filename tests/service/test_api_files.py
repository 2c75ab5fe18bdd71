"""/v1/files through the real HTTP API: the user's folder and the tenant's shared one, as sessions see
them; traversal of every kind gets 400 and changes nothing; uploads past the limit get 413."""

from __future__ import annotations

import os
import time
from pathlib import Path

import httpx
import pytest

from .conftest import Running
from .service_support import QuestionModel, ThreadServer, make_account, program, read_sse, service_settings


def snapshot(root: Path) -> dict[str, tuple[int, float]]:
    return {
        str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime)
        for p in root.rglob("*")
        if not p.is_symlink()
    }


def test_files_round_trip_in_both_scopes_and_runs_see_them(running: Running) -> None:
    with running.client(running.alice) as alice:
        put = alice.put("/v1/files/data/numbers.csv", content=b"n\n1\n2\n3\n")
        assert put.status_code == 201 and put.json()["size"] == 8
        assert alice.get("/v1/files/data/numbers.csv").content == b"n\n1\n2\n3\n"
        shared = alice.put("/v1/files/team-notes.txt", params={"scope": "tenant"}, content=b"hello team")
        assert shared.status_code == 201
        listing = alice.get("/v1/files").json()
        entry = next(f for f in listing["files"] if f["path"] == "data/numbers.csv")
        assert entry["size"] == 8 and entry["modified"] <= time.time() and not entry["is_dir"]
        assert listing["used_bytes"] >= 8 and listing["quota_bytes"] > listing["used_bytes"]
        code = (
            "import pandas as pd\n"
            "print(pd.read_csv('data/numbers.csv').n.sum(), open('../team-notes.txt').read())"
        )
        run = alice.post(
            "/v1/runs",
            json={
                "question": program([code, "open('out.txt','w').write('6')"], "6"),
                "files": ["data/numbers.csv"],
            },
        ).json()
        with alice.stream("GET", f"/v1/runs/{run['id']}/events") as response:
            events = read_sse(response)
        printed = "".join(e["data"]["text"] for e in events if e["event"] == "output_chunk")
        assert printed.strip() == "6 hello team"
        assert alice.get("/v1/files/out.txt").content == b"6"  # written by the run, seen through the API
        assert (running.data_dir / "storage" / "acme" / "alice" / "out.txt").read_bytes() == b"6"
    with running.client(running.bob) as bob:
        assert bob.get("/v1/files/team-notes.txt", params={"scope": "tenant"}).content == b"hello team"
        assert bob.get("/v1/files/data/numbers.csv").status_code == 404  # alice's folder is not bob's
        tenant_view = bob.get("/v1/files", params={"scope": "tenant"}).json()["files"]
        assert not [f for f in tenant_view if f["path"].split("/")[0] in ("alice", "bob")]
    with running.client(running.carol) as carol:  # another tenant
        assert carol.get("/v1/files/team-notes.txt", params={"scope": "tenant"}).status_code == 404
    with running.client(running.alice) as alice:
        assert alice.delete("/v1/files/data/numbers.csv").status_code == 204
        assert alice.get("/v1/files/data/numbers.csv").status_code == 404


@pytest.mark.parametrize(
    "path",
    [
        "../bob/x.txt",
        "a/../../x",
        "%2e%2e/x",
        "%2Fetc%2Fpasswd",
        "a%00b",
        "x" * 300,
        "/".join(["d"] * 600),
        "escape-link/passwd",
        "bob-link/secret.txt",
    ],
)
def test_path_traversal_gets_400_and_touches_nothing(running: Running, path: str) -> None:
    folder = running.data_dir / "storage" / "acme" / "alice"
    folder.mkdir(parents=True, exist_ok=True)
    for place in (folder, folder.parent):  # the user's folder and the shared one
        for name, target in (("escape-link", "/etc"), ("bob-link", str(folder.parent / "bob"))):
            if not (place / name).is_symlink():
                os.symlink(target, place / name)
    before = snapshot(running.data_dir / "storage")
    with running.client(running.alice) as alice:
        for method in ("PUT", "GET", "DELETE"):
            for scope in ("user", "tenant"):
                url = f"{running.url}/v1/files/{path}?scope={scope}"
                response = alice.request(method, httpx.URL(url), content=b"evil" if method == "PUT" else None)
                assert response.status_code in (400, 404), (
                    method,
                    scope,
                    response.status_code,
                    response.text,
                )
                if response.status_code == 404:  # the router's own 404 for a path it cannot route
                    assert "passwd" not in response.text or "no such" in response.text.lower()
    assert snapshot(running.data_dir / "storage") == before


def test_an_upload_past_the_limit_gets_413_and_leaves_nothing(tmp_path: Path) -> None:
    settings = service_settings(tmp_path, max_upload_mib=1)
    server = ThreadServer(settings, QuestionModel()).start()
    try:
        who = make_account(server.service.db, "acme", "dave")
        with httpx.Client(base_url=server.url, headers=who.headers, timeout=60) as client:
            big = b"x" * (1024 * 1024 + 1)
            response = client.put("/v1/files/big.bin", content=big)
            assert (
                response.status_code == 413
                and "service.max_upload_mib" in response.json()["error"]["message"]
            )

            def chunks() -> object:  # no Content-Length: the limit holds while streaming
                for _ in range(5):
                    yield b"y" * (512 * 1024)

            response = client.put("/v1/files/big.bin", content=chunks())  # type: ignore[arg-type]
            assert response.status_code == 413
            assert client.get("/v1/files").json()["files"] == []
            assert client.put("/v1/files/ok.bin", content=b"z" * 1024).status_code == 201
    finally:
        server.stop()


def test_idle_sessions_expire_and_say_so(tmp_path: Path) -> None:
    settings = service_settings(tmp_path, session_idle_s=1.0)
    server = ThreadServer(settings, QuestionModel()).start()
    try:
        who = make_account(server.service.db, "acme", "erin")
        with httpx.Client(base_url=server.url, headers=who.headers, timeout=60) as client:
            sid = client.post("/v1/sessions").json()["id"]
            assert client.post(f"/v1/sessions/{sid}/execute", json={"code": "x = 1"}).status_code == 200
            deadline = time.monotonic() + 10
            while client.get(f"/v1/sessions/{sid}").json()["live"]:
                assert time.monotonic() < deadline, "the idle session was not closed"
                time.sleep(0.2)
            gone = client.post(f"/v1/sessions/{sid}/execute", json={"code": "x"})
            assert gone.status_code == 410 and "idle" in gone.json()["error"]["message"]
            assert client.get(f"/v1/sessions/{sid}").json()["close_reason"] == "idle"
    finally:
        server.stop()
