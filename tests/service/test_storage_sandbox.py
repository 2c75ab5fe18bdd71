"""What a real sandbox session of a user sees of the storage (zygote, the default, and bwrap): its
folder as the start directory, the tenant's shared folder as ``..``, nothing of other users or other
tenants by any path, files that persist and that the user's next sessions (other uids) can overwrite,
and what happens with a user created while a session runs."""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from process_support import scan_memory
from thinkbox.sandbox.backend import SandboxBackend
from thinkbox.sandbox.zygote.backend import ZygoteBackend
from thinkbox.service.storage import FOLDER_ID, BadPath, Storage

from .storage_support import BASE, PROBE, make_storage, open_as, start_backend, value

pytestmark = pytest.mark.asyncio(loop_scope="module")

BOB_SECRET = "bob's secret"


@pytest_asyncio.fixture(scope="module", loop_scope="module", params=["zygote", "bwrap"])
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[SandboxBackend]:
    started = await start_backend(request.param)
    try:
        yield started
    finally:
        await started.aclose()


@pytest.fixture
def storage(tmp_path: Path) -> Storage:
    s = make_storage(tmp_path / "storage")
    s.write("acme", "alice", "user", "notes.txt", b"alice's notes")
    s.write("acme", "bob", "user", "secret.txt", BOB_SECRET.encode())
    s.write("acme", "bob", "user", "deep/er/secret.txt", BOB_SECRET.encode())
    s.write("acme", "alice", "tenant", "shared.txt", b"for everyone in acme")
    s.write("other", "carol", "user", "carol.txt", b"carol's file")
    s.write("other", "carol", "tenant", "other-shared.txt", b"other's shared file")
    return s


async def test_the_start_directory_is_the_users_folder_and_dotdot_the_shared_folder(
    backend: SandboxBackend, storage: Storage
) -> None:
    s = await open_as(backend, storage, "acme", "alice")
    try:
        assert await value(s, "import os\nos.getcwd()") == "/workspace/acme/alice"
        assert await value(s, "open('notes.txt').read()") == "alice's notes"
        assert await value(s, "open('../shared.txt').read()") == "for everyone in acme"
        listing = await value(s, "sorted(os.listdir('..'))")
        # bob's folder shows only as the empty, read-only directory that covers it
        assert listing == ["alice", "bob", "shared.txt"]
        assert await value(s, "sorted(os.listdir('/workspace'))") == ["acme"]
    finally:
        await s.close()


async def test_other_users_files_are_out_of_reach_by_any_path(
    backend: SandboxBackend, storage: Storage
) -> None:
    s = await open_as(backend, storage, "acme", "alice")
    try:
        await s.execute(PROBE)
        found = await value(s, "everything()")
        assert not any(BOB_SECRET in str(content) for content in found.values()), found
        assert sorted(p for p in found if "/bob" in p) == []
        for path in (
            "../bob/secret.txt",
            "/workspace/acme/bob/secret.txt",
            "/workspace/acme/bob/deep/er/secret.txt",
            "/workspace/../workspace/acme/bob/secret.txt",
            "/proc/self/root/workspace/acme/bob/secret.txt",
            "/proc/self/cwd/../bob/secret.txt",
        ):
            assert await value(s, f"probe({path!r}, 'read')") == "FileNotFoundError", path
        for how in ("list", "scandir"):
            assert await value(s, f"probe('../bob', {how!r})") == []
        assert await value(s, "probe('../bob/planted.txt', 'write')") in ("OSError", "PermissionError")
        for how in ("rename", "rmdir"):  # the cover cannot be moved away
            assert await value(s, f"probe('../bob', {how!r})") in ("OSError", "PermissionError")
        umount = await s.shell("umount /workspace/acme/bob 2>&1; ls /workspace/acme/bob")
        assert "secret" not in umount.stdout
    finally:
        await s.close()
    assert (storage.root / "acme" / "bob" / "secret.txt").read_text() == BOB_SECRET
    assert sorted(os.listdir(storage.root / "acme" / "bob")) == ["deep", "secret.txt"]


async def test_files_persist_and_the_users_next_sessions_read_overwrite_and_delete_them(
    backend: SandboxBackend, storage: Storage
) -> None:
    first = await open_as(backend, storage, "acme", "alice")
    second = None
    try:
        code = (
            "os.makedirs('out', exist_ok=True)\n"
            "open('out/result.txt', 'w').write('from the first session')\n"
            "os.chmod('out/result.txt', 0o600)\n"
            "os.getuid()"
        )
        await first.execute("import os")
        first_uid = await value(first, code)
        host = storage.root / "acme" / "alice" / "out" / "result.txt"
        assert host.read_text() == "from the first session"
        # a second session while the first still runs: another slot, another uid
        second = await open_as(backend, storage, "acme", "alice")
        second_uid = await value(second, "import os\nos.getuid()")
        assert second_uid != first_uid
        assert await value(second, "open('out/result.txt').read()") == "from the first session"
        assert await value(second, "os.stat('out/result.txt').st_uid == os.getuid()") is True
        await value(second, "open('out/result.txt', 'w').write('overwritten by the second')")
        assert host.read_text() == "overwritten by the second"
        await value(second, "os.remove('out/result.txt'); os.rmdir('out'); sorted(os.listdir())")
        assert not host.exists()
    finally:
        await first.close()
        if second is not None:
            await second.close()
    if os.geteuid() == 0:  # on disk everything belongs to uid 0, in a group the user's mount maps
        st = os.stat(storage.root / "acme" / "alice" / "notes.txt")
        assert st.st_uid == 0
        assert os.stat(storage.root / "acme" / "alice").st_uid == FOLDER_ID


async def test_a_file_written_to_the_shared_folder_is_seen_and_overwritten_by_another_user(
    backend: SandboxBackend, storage: Storage
) -> None:
    alice = await open_as(backend, storage, "acme", "alice")
    try:
        await value(alice, "open('../from-alice.txt', 'w').write('hello bob')")
    finally:
        await alice.close()
    assert (storage.root / "acme" / "from-alice.txt").read_text() == "hello bob"
    assert [e.path for e in storage.list("acme", "bob", "tenant")] == ["from-alice.txt", "shared.txt"]
    bob = await open_as(backend, storage, "acme", "bob")
    try:
        assert await value(bob, "open('../from-alice.txt').read()") == "hello bob"
        await value(bob, "open('../from-alice.txt', 'w').write('hello alice')")
        assert await value(bob, "import os\nsorted(os.listdir('..'))") == [
            "alice",
            "bob",
            "from-alice.txt",
            "shared.txt",
        ]
        assert await value(bob, "os.listdir('../alice')") == []  # covered in bob's session
    finally:
        await bob.close()
    assert (storage.root / "acme" / "from-alice.txt").read_text() == "hello alice"


async def test_a_user_of_another_tenant_sees_nothing_of_acme(
    backend: SandboxBackend, storage: Storage
) -> None:
    s = await open_as(backend, storage, "other", "carol")
    try:
        await s.execute(PROBE)
        found = await value(s, "everything()")
        assert sorted(found) == ["/workspace/other/carol/carol.txt", "/workspace/other/other-shared.txt"]
        assert await value(s, "sorted(os.listdir('/workspace'))") == ["other"]
        assert await value(s, "probe('/workspace/acme/shared.txt', 'read')") == "FileNotFoundError"
    finally:
        await s.close()


async def test_a_user_created_after_a_session_started_stays_out_of_its_reach(
    backend: SandboxBackend, storage: Storage, request: pytest.FixtureRequest
) -> None:
    if backend.name == "bwrap" or os.geteuid() != 0:
        request.applymarker(
            pytest.mark.xfail(
                strict=True,
                reason="known gap (docs/security.md): bwrap sessions, and every session of an engine that "
                "is not root, act as one host identity that every user's folder is open to; a folder "
                "made after the session started is not covered",
            )
        )
    alice = await open_as(backend, storage, "acme", "alice")
    try:
        await alice.execute(PROBE)
        storage.write("acme", "dave", "user", "secret.txt", b"dave's secret")  # dave is new
        # the name shows (a directory the session cannot open); nothing in it can be reached
        assert "dave" in await value(alice, "sorted(os.listdir('..'))")
        for how in ("list", "scandir"):
            assert await value(alice, f"probe('../dave', {how!r})") == "PermissionError"
        assert await value(alice, "probe('../dave/secret.txt', 'read')") == "PermissionError"
        assert await value(alice, "probe('../dave/planted.txt', 'write')") == "PermissionError"
        for how in ("rename", "rmdir", "chmod"):
            assert await value(alice, f"probe('../dave', {how!r})") in ("PermissionError", "OSError")
        found = await value(alice, "everything()")
        assert not any("dave's secret" in str(content) for content in found.values())
    finally:
        await alice.close()
    dave = await open_as(backend, storage, "acme", "dave")
    try:
        assert await value(dave, "open('secret.txt').read()") == "dave's secret"
    finally:
        await dave.close()


async def test_a_folder_code_made_under_a_future_users_name_is_no_way_into_that_users_folder(
    backend: SandboxBackend, storage: Storage
) -> None:
    """Code may make an empty folder in the shared folder under the name of a user who has none yet, and
    hold it open; when that user's folder is made, what it holds must not show through that handle."""
    alice = await open_as(backend, storage, "acme", "alice")
    try:
        hold = "import os\nos.mkdir('../erin')\nheld = os.open('../erin', os.O_RDONLY | os.O_DIRECTORY)"
        assert await value(alice, hold + "\nos.listdir(held)") == []
        storage.write("acme", "erin", "user", "secret.txt", b"erin's secret")  # erin is new
        assert "erin" in await value(alice, "sorted(os.listdir('..'))")
        assert await value(alice, "sorted(os.listdir(held))") == []
    finally:
        await alice.close()
    erin = await open_as(backend, storage, "acme", "erin")
    try:
        assert await value(erin, "open('secret.txt').read()") == "erin's secret"
    finally:
        await erin.close()


async def test_symlinks_that_code_planted_are_refused_by_the_files_api(
    backend: SandboxBackend, storage: Storage
) -> None:
    s = await open_as(backend, storage, "acme", "alice")
    try:
        await value(
            s,
            "import os\nos.symlink('/etc/passwd', 'pw'); os.symlink('../bob', 'bobs'); "
            "os.symlink('/etc', 'etc'); sorted(os.listdir())",
        )
    finally:
        await s.close()
    for path in ("pw", "bobs/secret.txt", "etc/passwd"):
        with pytest.raises(BadPath):
            storage.read("acme", "alice", "user", path)
    with pytest.raises(BadPath):
        storage.write("acme", "alice", "user", "bobs/secret.txt", b"overwrite")
    assert (storage.root / "acme" / "bob" / "secret.txt").read_text() == BOB_SECRET
    assert [e.path for e in storage.list("acme", "alice", "user")] == ["notes.txt"]


async def test_check_quota_reports_what_code_wrote_and_gives_foreign_files_back(
    backend: SandboxBackend, tmp_path: Path
) -> None:
    storage = make_storage(tmp_path / "storage", user_quota_bytes=64 * 1024)
    storage.ensure("acme", "alice")
    foreign = storage.root / "acme" / "alice" / "copied.txt"
    foreign.write_text("copied in by an operator")
    if os.geteuid() == 0:
        os.chown(foreign, 1000, 1000)
    s = await open_as(backend, storage, "acme", "alice")
    try:
        await s.execute(PROBE)
        if os.geteuid() == 0:  # not an id the session's mount maps: read-only until given back
            assert await value(s, "probe('copied.txt', 'write')") == "PermissionError"
        assert storage.check_quota("acme", "alice") is None
        assert await value(s, "probe('copied.txt', 'write')") == "written"
        await value(s, "open('big.bin', 'wb').write(b'x' * 100_000)")
        over = storage.check_quota("acme", "alice")
        assert over is not None and (over.scope, over.kind) == ("user", "bytes")
        assert "service.user_quota_mib" in str(over)
    finally:
        await s.close()


async def test_a_tenant_with_many_users_hides_them_all(backend: SandboxBackend, tmp_path: Path) -> None:
    storage = make_storage(tmp_path / "storage", tenant_quota_files=1000)
    names = [f"user-{i:03d}" for i in range(150)]  # far more covers than the 16 mounts of old
    for name in names:
        storage.write("acme", name, "user", "mine.txt", name.encode())
    s = await open_as(backend, storage, "acme", "user-000")
    try:
        await s.execute(PROBE)
        assert await value(s, "sorted(os.listdir('..'))") == names
        found = await value(s, "everything()")
        assert found == {"/workspace/acme/user-000/mine.txt": "user-000"}
    finally:
        await s.close()


async def test_tenant_and_user_names_never_reach_the_zygote_or_later_sessions(
    backend: SandboxBackend, tmp_path: Path
) -> None:
    if not isinstance(backend, ZygoteBackend) or os.geteuid() != 0:
        pytest.skip("the fork server's heap, which later sessions inherit, exists on the zygote backend")
    tenant, user, other = ("tb" + secrets.token_hex(10) for _ in range(3))
    storage = make_storage(tmp_path / "storage")
    storage.ensure(tenant, other)  # hidden in the session: its name is a mount target too
    s = await open_as(backend, storage, tenant, user)
    later = []
    try:
        assert await value(s, "import os\nos.getcwd()") == f"/workspace/{tenant}/{user}"
        later = [await backend.create_session(BASE) for _ in range(2)]
        for session in later:
            assert await value(session, "1") == 1
        needles = [name.encode() for name in (tenant, user, other)]
        assert s.process is not None
        hits, _ = scan_memory(s.process.host_pids()[0], needles)
        assert needles[0] in hits, "positive control: the session's own memory holds its tenant's name"
        pids = {"zygote": backend.zygote_pid}
        pids |= {f"later session {i}": x.process.host_pids()[0] for i, x in enumerate(later) if x.process}
        for what, pid in pids.items():
            assert pid is not None
            hits, scanned = scan_memory(pid, needles)
            assert scanned > 20 * 1024 * 1024, f"only {scanned} bytes of the {what} were read"
            assert not hits, f"{sorted(hits)} found in the memory of the {what}"
    finally:
        await s.close()
        for session in later:
            await session.close()
