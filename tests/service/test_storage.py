"""The storage on disk, without sandboxes: every kind of path that must not get out of its folder is
refused with the right error and touches nothing (the whole tree is compared before and after), uploads
are limited while they stream, quotas hold, listings have sizes and times, the tenant scope never
reaches a user's folder."""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from thinkbox.config import load_settings
from thinkbox.sandbox.types import Limits, Mount, SessionConfig
from thinkbox.service.storage import (
    FOLDER_ID,
    BadPath,
    Conflict,
    DirectoryNotEmpty,
    IsADirectory,
    NameTaken,
    NotADirectory,
    NotFound,
    QuotaExceeded,
    Storage,
    StorageError,
    TooLarge,
    check_path,
)

KiB = 1024


def make_storage(root: Path, **limits: int) -> Storage:
    values = {
        "user_quota_bytes": 64 * KiB,
        "user_quota_files": 50,
        "tenant_quota_bytes": 160 * KiB,
        "tenant_quota_files": 120,
        "max_upload_bytes": 48 * KiB,
        **limits,
    }
    return Storage(root, **values)


@pytest.fixture
def storage(tmp_path: Path) -> Storage:
    s = make_storage(tmp_path / "storage")
    s.ensure("acme", "alice")
    s.ensure("acme", "bob")
    s.ensure("other", "carol")
    s.write("acme", "bob", "user", "secret.txt", b"bob's secret")
    s.write("acme", "alice", "user", "notes/today.txt", b"alice's notes")
    s.write("acme", "alice", "tenant", "shared.txt", b"for everyone")
    return s


def snapshot(*roots: Path) -> dict[str, tuple[object, ...]]:
    """Every entry below ``roots``: type, mode, owner, size, mtime, link target (links not followed)."""
    found: dict[str, tuple[object, ...]] = {}
    for root in roots:
        for folder, dirs, files in os.walk(root):
            for name in dirs + files:
                path = os.path.join(folder, name)
                if name == ".staging":  # its own times change with every upload; its contents count
                    continue
                st = os.lstat(path)
                link = os.readlink(path) if stat.S_ISLNK(st.st_mode) else None
                found[path] = (st.st_mode, st.st_uid, st.st_gid, st.st_size, st.st_mtime_ns, link)
    return found


@pytest.fixture
def untouched(storage: Storage, tmp_path: Path) -> Iterator[Callable[[], None]]:
    """``untouched()``: assert that nothing changed below tmp_path since the test's set-up was done
    (call ``untouched.mark()`` first if the test plants things)."""
    state = {"before": snapshot(tmp_path)}

    def check() -> None:
        assert snapshot(tmp_path) == state["before"]
        assert os.listdir(storage.root / ".staging") == []

    check.mark = lambda: state.update(before=snapshot(tmp_path))  # type: ignore[attr-defined]
    yield check


BAD_PATHS = {
    "empty": "",
    "only dots": "./.",
    "parent": "..",
    "climbs out": "a/../../x",
    "climbs in the middle": "notes/../../bob/secret.txt",
    "absolute": "/etc/passwd",
    "NUL": "notes/a\0b",
    "newline": "a\nb",
    "escape sequence": "\x1b[31mred",
    "backslash": "..\\..\\etc\\passwd",
    "component over 255 bytes": "x" * 256,
    "multi-byte component over 255 bytes": "é" * 128,
    "path over 1024 bytes": "/".join(["d" * 200] * 6),
    "not UTF-8": "bad\udcff",
}


@pytest.mark.parametrize("scope", ["user", "tenant"])
@pytest.mark.parametrize("path", list(BAD_PATHS.values()), ids=list(BAD_PATHS))
def test_bad_paths_are_refused_with_400_and_touch_nothing(
    storage: Storage, untouched: Callable[[], None], scope: str, path: str
) -> None:
    ops: list[Callable[[], object]] = [
        lambda: storage.write("acme", "alice", scope, path, b"x"),  # type: ignore[arg-type]
        lambda: storage.read("acme", "alice", scope, path),  # type: ignore[arg-type]
        lambda: storage.stat("acme", "alice", scope, path),  # type: ignore[arg-type]
        lambda: storage.delete("acme", "alice", scope, path),  # type: ignore[arg-type]
    ]
    for op in ops:
        with pytest.raises(BadPath) as caught:
            op()
        assert caught.value.status == 400 and caught.value.code == "bad_path"
    untouched()


def test_paths_are_normalised() -> None:
    assert check_path("a//./b/") == "a/b"
    assert check_path("./notes/today.txt") == "notes/today.txt"
    assert check_path("é" * 127) == "é" * 127  # 254 bytes: allowed


def plant(storage: Storage, tmp_path: Path) -> Path:
    """What code in a session could leave in alice's folder: links out, to bob's folder, a linked
    parent folder, and a file where a folder is expected. Returns a folder outside the storage."""
    alice = storage.root / "acme" / "alice"
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "target.txt").write_text("outside")
    os.symlink("/etc", alice / "etc")
    os.symlink("/etc/passwd", alice / "passwd")
    os.symlink("../bob", alice / "bobs")
    os.symlink(str(storage.root / "acme" / "bob" / "secret.txt"), alice / "bob-secret")
    os.symlink(str(outside), alice / "linked-folder")
    (alice / "file.txt").write_text("a file")
    os.symlink("alice", storage.root / "acme" / "to-alice")  # in the shared folder, to a user's folder
    return outside


LINKS = {
    "symlink to /etc, then a file in it": ("user", "etc/passwd", BadPath),
    "symlink to /etc/passwd": ("user", "passwd", BadPath),
    "symlink to another user's folder": ("user", "bobs/secret.txt", BadPath),
    "symlink to another user's file": ("user", "bob-secret", BadPath),
    "symlinked parent folder": ("user", "linked-folder/target.txt", BadPath),
    "a file where a folder is expected": ("user", "file.txt/inner", NotADirectory),
    "shared folder's link to a user's folder": ("tenant", "to-alice/notes/today.txt", BadPath),
}


@pytest.mark.parametrize("case", list(LINKS.values()), ids=list(LINKS))
def test_symlinks_are_never_followed_and_files_are_not_folders(
    storage: Storage, tmp_path: Path, untouched: Callable[[], None], case: tuple[str, str, type[Exception]]
) -> None:
    scope, path, error = case
    outside = plant(storage, tmp_path)
    untouched.mark()  # type: ignore[attr-defined]
    etc_before = snapshot(Path("/etc")) if path.startswith("etc") else None
    for op in (
        lambda: storage.write("acme", "alice", scope, path, b"overwritten"),  # type: ignore[arg-type]
        lambda: storage.read("acme", "alice", scope, path),  # type: ignore[arg-type]
        lambda: storage.stat("acme", "alice", scope, path),  # type: ignore[arg-type]
        lambda: storage.delete("acme", "alice", scope, path),  # type: ignore[arg-type]
    ):
        with pytest.raises(error):
            op()
    untouched()
    assert (outside / "target.txt").read_text() == "outside"
    assert etc_before is None or snapshot(Path("/etc")) == etc_before
    with pytest.raises(BadPath):  # a write into the linked folder reads nothing and makes nothing
        storage.write("acme", "alice", "user", "linked-folder/new.txt", b"x")
    assert sorted(os.listdir(outside)) == ["target.txt"]


def test_not_a_directory_and_is_a_directory_are_409(storage: Storage) -> None:
    with pytest.raises(NotADirectory) as caught:
        storage.write("acme", "alice", "user", "notes/today.txt/deeper.txt", b"x")
    assert caught.value.status == 409
    with pytest.raises(IsADirectory) as dir_caught:
        storage.read("acme", "alice", "user", "notes")
    assert dir_caught.value.status == 409
    with pytest.raises(IsADirectory):
        storage.write("acme", "alice", "user", "notes", b"x")
    with pytest.raises(IsADirectory):
        storage.require_file("acme", "alice", "notes")
    with pytest.raises(DirectoryNotEmpty):
        storage.delete("acme", "alice", "user", "notes")
    assert isinstance(DirectoryNotEmpty("x"), Conflict)


def test_a_fifo_is_refused_without_waiting(storage: Storage) -> None:
    os.mkfifo(storage.root / "acme" / "alice" / "pipe")
    with pytest.raises(BadPath, match="not a regular file"):
        storage.read("acme", "alice", "user", "pipe")


def test_the_tenant_scope_never_reaches_a_users_folder(
    storage: Storage, untouched: Callable[[], None]
) -> None:
    for path in ("bob/secret.txt", "bob", "alice/notes/today.txt", "bob/new.txt"):
        with pytest.raises(BadPath, match="user's folder"):
            storage.write("acme", "alice", "tenant", path, b"x")
        for op in (storage.read, storage.stat, storage.delete):
            with pytest.raises(BadPath, match="user's folder"):
                op("acme", "alice", "tenant", path)
    untouched()
    listed = [e.path for e in storage.list("acme", "alice", "tenant")]
    assert listed == ["shared.txt"]
    assert [e.path for e in storage.list("other", "carol", "tenant")] == []


def test_write_read_list_delete(storage: Storage) -> None:
    entry = storage.write("acme", "alice", "user", "a/b/data.bin", iter([b"\x00\x01", b"\xff" * 10]))
    assert (entry.path, entry.size, entry.is_dir) == ("a/b/data.bin", 12, False)
    path = storage.root / "acme" / "alice" / "a" / "b" / "data.bin"
    assert entry.modified == os.stat(path).st_mtime
    with storage.read("acme", "alice", "user", "a/b/data.bin") as f:
        assert f.read() == b"\x00\x01" + b"\xff" * 10
    storage.write("acme", "alice", "user", "a/b/data.bin", b"new")  # replaced
    assert path.read_bytes() == b"new"
    listed = storage.list("acme", "alice", "user")
    assert [(e.path, e.size, e.is_dir) for e in listed] == [
        ("a", 0, True),
        ("a/b", 0, True),
        ("a/b/data.bin", 3, False),
        ("notes", 0, True),
        ("notes/today.txt", 13, False),
    ]
    assert all(
        abs(e.modified - os.stat(storage.root / "acme" / "alice" / e.path).st_mtime) < 1e-6 for e in listed
    )
    assert storage.require_file("acme", "alice", "notes/today.txt").size == 13
    storage.delete("acme", "alice", "user", "a/b/data.bin")
    storage.delete("acme", "alice", "user", "a/b")  # an empty folder
    with pytest.raises(NotFound) as caught:
        storage.read("acme", "alice", "user", "a/b/data.bin")
    assert caught.value.status == 404
    with pytest.raises(NotFound):
        storage.delete("acme", "alice", "user", "a/b")
    assert [e.path for e in storage.list("acme", "bob", "user")] == ["secret.txt"]


def test_listing_leaves_out_links_and_special_files(storage: Storage) -> None:
    os.symlink("/etc", storage.root / "acme" / "alice" / "etc")
    os.mkfifo(storage.root / "acme" / "alice" / "pipe")
    assert [e.path for e in storage.list("acme", "alice", "user")] == ["notes", "notes/today.txt"]


def test_the_upload_limit_holds_while_streaming_and_leaves_nothing(
    storage: Storage, untouched: Callable[[], None]
) -> None:
    sent: list[int] = []

    def chunks() -> Iterator[bytes]:
        for i in range(100):
            sent.append(i)
            yield b"x" * (4 * KiB)

    with pytest.raises(TooLarge) as caught:
        storage.write("acme", "alice", "user", "big/upload.bin", chunks())
    assert caught.value.status == 413 and "service.max_upload_mib" in str(caught.value)
    assert len(sent) == 13  # stopped at the chunk that went past 48 KiB, not after all 100
    untouched()
    storage.write("acme", "alice", "user", "fits.bin", b"x" * (48 * KiB))  # exactly the limit


@pytest.mark.parametrize(
    ("limits", "scope", "kind"),
    [
        ({"user_quota_bytes": 20 * KiB}, "user", "bytes"),
        ({"user_quota_files": 4}, "user", "files"),
        ({"tenant_quota_bytes": 20 * KiB}, "tenant", "bytes"),
        ({"tenant_quota_files": 8}, "tenant", "files"),
    ],
)
def test_quotas_refuse_an_upload_before_it_lands(
    tmp_path: Path, limits: dict[str, int], scope: str, kind: str
) -> None:
    s = make_storage(tmp_path / "storage", **limits)
    s.write("acme", "bob", "user", "b1.bin", b"b" * (8 * KiB))  # bob's bytes count for the tenant
    s.write("acme", "bob", "user", "b2.bin", b"b")
    s.write("acme", "alice", "user", "a1.bin", b"a" * (8 * KiB))
    s.write("acme", "alice", "user", "a2.bin", b"a")
    before = snapshot(tmp_path)
    with pytest.raises(QuotaExceeded) as caught:
        for i in range(10):
            s.write("acme", "alice", "user", f"deep/er/{i}.bin", b"a" * (4 * KiB))
            before = snapshot(tmp_path)
    err = caught.value
    assert (err.scope, err.kind, err.status, err.code) == (scope, kind, 413, "quota_exceeded")
    setting = f"service.{scope}_quota_{'mib' if kind == 'bytes' else 'files'}"
    assert err.setting == setting and setting in str(err) and err.used > err.limit
    assert snapshot(tmp_path) == before  # no file, no parent folder, no temporary file left
    assert os.listdir(s.root / ".staging") == []


def test_replacing_a_file_counts_its_growth_and_shrinking_is_allowed_over_quota(tmp_path: Path) -> None:
    s = make_storage(tmp_path / "storage", user_quota_bytes=10 * KiB, user_quota_files=3)
    s.write("acme", "alice", "user", "f.bin", b"x" * (6 * KiB))
    s.write("acme", "alice", "user", "f.bin", b"x" * (9 * KiB))  # replaces: 9 KiB in all
    with pytest.raises(QuotaExceeded):
        s.write("acme", "alice", "user", "g.bin", b"x" * (2 * KiB))
    (s.root / "acme" / "alice" / "f.bin").write_bytes(b"x" * (20 * KiB))  # code went over
    s.check_quota("acme", "alice")
    s.write("acme", "alice", "user", "f.bin", b"x")  # shrinking is always allowed
    assert s.usage("acme", "alice").user_bytes == 1


def test_check_quota_after_code_wrote_names_the_quota_and_the_setting(tmp_path: Path) -> None:
    s = make_storage(tmp_path / "storage", user_quota_bytes=10 * KiB, tenant_quota_files=5)
    s.ensure("acme", "alice")
    assert s.check_quota("acme", "alice") is None
    (s.root / "acme" / "alice" / "out.bin").write_bytes(b"x" * (11 * KiB))
    err = s.check_quota("acme", "alice")
    assert err is not None and (err.scope, err.kind) == ("user", "bytes")
    assert "user 'alice'" in str(err) and "11.0 KiB" not in str(err) and "service.user_quota_mib" in str(err)
    (s.root / "acme" / "alice" / "out.bin").unlink()
    for i in range(6):
        (s.root / "acme" / f"shared-{i}").write_text("x")
    err = s.check_quota("acme", "alice")
    assert err is not None and (err.scope, err.kind) == ("tenant", "files")
    assert "tenant 'acme'" in str(err) and "service.tenant_quota_files" in str(err)


def test_a_walk_leaves_a_users_folder_made_while_it_ran_with_its_owner(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The walk after code ran gives what sessions left with other ids back to uid 0 (as root). A user's
    folder made while a walk runs, after the walk read the list of users, must keep its owner: owned by
    uid 0 it would be open to the running sessions of the tenant's other users (the shared folder's mount
    maps uid 0), which could keep a handle in it."""
    if os.geteuid() != 0:
        pytest.skip("only an engine that is root gives files back")
    s = make_storage(tmp_path / "storage")
    s.ensure("acme", "alice")
    read, made = s.layout.users, []

    def users_then_erin(tenant: str) -> list[str]:
        found = read(tenant)
        if not made:  # erin's folder is made right after the walk read the users
            made.append("erin")
            s.ensure("acme", "erin")
        return found

    monkeypatch.setattr(s.layout, "users", users_then_erin)
    s.quotas.tally("acme", fresh=True)
    assert made and "erin" in read("acme")
    st = os.stat(s.root / "acme" / "erin")
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (FOLDER_ID, FOLDER_ID, 0o770)


def test_checks_after_code_walk_a_tenant_at_most_once_a_second(tmp_path: Path) -> None:
    s = make_storage(tmp_path / "storage", user_quota_bytes=10 * KiB)
    s.ensure("acme", "alice")
    assert s.check_after_code("acme", "alice") is None  # walks
    (s.root / "acme" / "alice" / "out.bin").write_bytes(b"x" * (11 * KiB))
    assert s.check_after_code("acme", "alice") is None  # the walk of a moment ago stands
    assert s.check_quota("acme", "alice", max_age_s=0.0) is not None  # a fresh walk sees it
    (s.root / "acme" / "alice" / "out.bin").unlink()
    assert s.check_after_code("acme", "alice") is not None  # still that walk's answer...
    time.sleep(1.05)
    assert s.check_after_code("acme", "alice") is None  # ...for a second at most


def test_usage_counts_the_user_and_the_whole_tenant(storage: Storage) -> None:
    usage = storage.usage("acme", "alice")
    assert (usage.user_bytes, usage.user_files) == (13, 2)  # notes/ and notes/today.txt
    assert (usage.tenant_bytes, usage.tenant_files) == (13 + 12 + 12, 4)  # + bob's file + shared.txt
    storage.write("acme", "alice", "user", "more.txt", b"12345")  # this process's writes are counted at once
    assert storage.usage("acme", "alice").user_bytes == 18
    assert storage.usage("other", "carol").tenant_files == 0


def test_user_folders_are_made_with_their_owner_and_taken_over_when_empty(tmp_path: Path) -> None:
    s = make_storage(tmp_path / "storage")
    alice = s.ensure("acme", "alice")
    assert s.ensure("acme", "alice") == alice == s.root / "acme" / "alice"
    st = os.stat(alice)
    if os.geteuid() == 0:
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (FOLDER_ID, FOLDER_ID, 0o770)
    else:
        assert stat.S_IMODE(st.st_mode) == 0o700
    assert stat.S_IMODE(os.stat(s.root).st_mode) == 0o700
    (s.root / "acme" / "dave").mkdir(mode=0o755)  # e.g. made by an older admin command: empty
    s.ensure("acme", "dave")
    assert stat.S_IMODE(os.stat(s.root / "acme" / "dave").st_mode) == (0o770 if os.geteuid() == 0 else 0o700)
    (s.root / "acme" / "reports").mkdir()
    (s.root / "acme" / "reports" / "q1.txt").write_text("shared data")
    with pytest.raises(NameTaken) as caught:
        s.ensure("acme", "reports")
    assert caught.value.status == 409
    (s.root / "acme" / "erin").write_text("a shared file")
    with pytest.raises(NameTaken):
        s.ensure("acme", "erin")
    assert s.users("acme") == ["alice", "dave"]
    with pytest.raises(BadPath):
        s.ensure("acme", "../x")
    with pytest.raises(BadPath):
        s.ensure("Acme", "alice")


def test_a_tenant_folder_replaced_by_a_symlink_is_refused(tmp_path: Path) -> None:
    s = make_storage(tmp_path / "storage")
    s.ensure("acme", "alice")
    (tmp_path / "elsewhere").mkdir()
    os.symlink(tmp_path / "elsewhere", s.root / "evil")
    with pytest.raises(StorageError) as caught:
        s.ensure("evil", "alice")
    assert caught.value.status == 500 and "repair" in str(caught.value)
    assert os.listdir(tmp_path / "elsewhere") == []


def test_statuses_of_the_error_tree() -> None:
    assert [e.status for e in (BadPath(""), NotFound(""), Conflict(""), TooLarge(""))] == [400, 404, 409, 413]
    assert QuotaExceeded("", scope="user", kind="bytes", used=2, limit=1, setting="s").status == 413


def test_session_config_adds_the_view_to_the_base(storage: Storage) -> None:
    extra = Mount(source=storage.root, target="extra")
    base = SessionConfig(limits=Limits(timeout_s=5), env={"A": "1"}, mounts=(extra,))
    config = storage.session_config("acme", "alice", base)
    assert config.limits == base.limits and config.env == {"A": "1"}
    assert config.cwd == "acme/alice" and config.cwd_in_workspace() == "/workspace/acme/alice"
    first, shared, own = config.mounts
    assert first == extra
    assert (shared.source, shared.target, shared.read_only, shared.hide) == (
        storage.root / "acme",
        "acme",
        False,
        ("bob",),
    )
    assert (own.source, own.target, own.read_only) == (storage.root / "acme" / "alice", "acme/alice", False)
    if os.geteuid() == 0:
        assert (shared.owner, own.owner) == ((0, 0), (0, FOLDER_ID))


def test_from_settings_uses_the_data_dir_and_the_service_settings(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path, service={"max_upload_mib": 2, "user_quota_files": 7})
    s = Storage.from_settings(settings)
    assert s.root == (tmp_path / "storage").resolve()
    assert (s.max_upload_bytes, s.user_quota_files) == (2 * 1024 * 1024, 7)
    assert s.tenant_quota_bytes == settings.service.tenant_quota_mib * 1024 * 1024
