"""Secrets through the real HTTP API (SQLite and PostgreSQL): stored encrypted, never answered back, refused
when malformed, invisible to other users and tenants, tenant-wide ones for tenant admins only, a user's own
winning over the tenant's; the key rotates with values still readable; the CLI."""

from __future__ import annotations

import asyncio
import os
import secrets
import stat
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import select, text
from typer.testing import CliRunner

from thinkbox.cli.app import app
from thinkbox.errors import ConfigError
from thinkbox.service.secrets.grant import forms
from thinkbox.service.secrets.keys import Keyring

from .conftest import Running
from .service_support import Account

cli = CliRunner()


def unique(prefix: str = "TOKEN") -> str:
    return f"{prefix}_{secrets.token_hex(3).upper()}"


def value() -> str:
    return f"sk+live/{secrets.token_hex(12)}=Zq"


@pytest.fixture
def cleanup(running: Running) -> Iterator[list[tuple[Account, str, str]]]:
    """(who, name, scope) to delete after the test (the server is shared by the whole test session)."""
    made: list[tuple[Account, str, str]] = []
    yield made
    for who, name, scope in made:
        with running.client(who) as c:
            c.delete(f"/v1/secrets/{name}", params={"scope": scope})


def put(client: httpx.Client, name: str, **body: Any) -> httpx.Response:
    return client.put(f"/v1/secrets/{name}", json={"value": value(), "hosts": ["api.example.com"], **body})


def admin(running: Running, *args: str) -> tuple[int, str]:
    result = cli.invoke(
        app, ["admin", *args, "--data-dir", str(running.data_dir), "--database-url", running.db.url]
    )
    return result.exit_code, result.output


def grants(running: Running, who: Account) -> dict[str, Any]:
    with running.db.engine.connect() as conn:
        tenant_id, user_id = conn.execute(
            text(
                "SELECT users.tenant_id, users.id FROM users JOIN tenants ON tenants.id = users.tenant_id "
                "WHERE tenants.name = :t AND users.name = :u"
            ),
            {"t": who.tenant, "u": who.user},
        ).one()
    found = asyncio.run(running.server.service.secrets.grants(tenant_id, user_id))
    return {g.name: g for g in found}


def test_set_list_get_replace_delete_and_the_value_never_comes_back(
    running: Running, cleanup: list[tuple[Account, str, str]]
) -> None:
    name, secret = unique(), value()
    cleanup.append((running.alice, name, "user"))
    answers = []
    with running.client(running.alice) as alice:
        body = {
            "value": secret,
            "hosts": ["API.example.com:443", "*.example.org"],
            "header": "Authorization: Bearer {secret}",
            "paths": ["/v1/"],
            "methods": ["get", "POST"],
        }
        created = alice.put(f"/v1/secrets/{name}", json=body)
        assert created.status_code == 201, created.text
        info = created.json()
        assert info["name"] == name and info["scope"] == "user" and info["active"]
        assert info["hosts"] == ["api.example.com:443", "*.example.org"]
        assert info["methods"] == ["GET", "POST"] and info["paths"] == ["/v1/"]
        assert info["header"] == "Authorization: Bearer {secret}" and info["last_used_at"] is None
        answers.append(created)
        replaced = alice.put(f"/v1/secrets/{name}", json={**body, "value": secret + "x", "methods": []})
        assert replaced.status_code == 200 and replaced.json()["methods"] == []
        answers.append(replaced)
        listed = alice.get("/v1/secrets")
        assert [s["name"] for s in listed.json()["secrets"]].count(name) == 1
        answers.append(listed)
        got = alice.get(f"/v1/secrets/{name}")
        assert got.status_code == 200 and got.json()["created_at"] == info["created_at"]
        answers.append(got)
        assert grants(running, running.alice)[name].value == secret + "x"
        assert alice.delete(f"/v1/secrets/{name}").status_code == 204
        assert alice.get(f"/v1/secrets/{name}").status_code == 404
        assert alice.delete(f"/v1/secrets/{name}").status_code == 404
    for answer in answers:
        for form in forms(secret):
            assert form.encode() not in answer.content, (form, answer.text)


REFUSALS = [
    ("1ABC", {}, "not usable"),
    ("MY-TOKEN", {}, "letters, digits and '_'"),
    ("A" * 65, {}, "not usable"),
    ("PATH", {}, "the sandbox itself uses"),
    ("https_proxy", {}, "the sandbox itself uses"),
    ("No_Proxy", {}, "the sandbox itself uses"),
    ("LD_PRELOAD", {}, "the sandbox itself uses"),
    ("PYTHONPATH", {}, "the sandbox itself uses"),
    ("OK_NAME", {"value": ""}, "value is empty"),
    ("OK_NAME", {"value": "x" * (64 * 1024 + 1)}, "the most is 65,536"),
    ("OK_NAME", {"value": "abc"}, "at least 8"),
    ("OK_NAME", {"value": "line\nbreak-value"}, "line break"),
    ("OK_NAME", {"hosts": []}, "hosts is empty"),
    ("OK_NAME", {"hosts": ["*"]}, "match every host"),
    ("OK_NAME", {"hosts": ["*.*"]}, "match every host"),
    ("OK_NAME", {"hosts": ["*:*"]}, "match every host"),
    ("OK_NAME", {"hosts": ["*.com"]}, "match every host"),
    ("OK_NAME", {"hosts": ["api.*.com"]}, "not a host name"),
    ("OK_NAME", {"hosts": ["exa mple.com"]}, "not a host name"),
    ("OK_NAME", {"hosts": ["example.com:99999"]}, "port must be"),
    (
        "OK_NAME",
        {"hosts": ["https://api.github.com/repos"]},
        "is a URL, not a host: give the host alone (e.g. api.github.com)",
    ),
    (
        "OK_NAME",
        {"hosts": ["user@example.com"]},
        "is a URL, not a host: give the host alone (e.g. example.com)",
    ),
    ("OK_NAME", {"hosts": ["::1"]}, "IPv6 address in brackets"),
    ("OK_NAME", {"header": "Authorization: Bearer TOKEN"}, "does not contain {secret}"),
    ("OK_NAME", {"header": "Bad Header: {secret}"}, "valid header name"),
    ("OK_NAME", {"header": "no colon {secret}"}, "valid header name"),
    ("OK_NAME", {"header": "Host: {secret}"}, "set by the proxy"),
    ("OK_NAME", {"paths": ["v1/"]}, "start it with /"),
    ("OK_NAME", {"methods": ["FETCH"]}, "not one of GET"),
]


@pytest.mark.parametrize(("name", "change", "words"), REFUSALS)
def test_bad_input_is_refused_naming_what_to_fix(
    running: Running, name: str, change: dict[str, Any], words: str
) -> None:
    with running.client(running.alice) as alice:
        response = put(alice, name, **change)
        assert response.status_code == 422, response.text
        error = response.json()["error"]
        assert error["code"] in ("invalid_secret", "invalid_request") and words in error["message"], error
        assert alice.get(f"/v1/secrets/{name}").status_code == 404


def test_another_users_or_tenants_secret_does_not_exist(
    running: Running, cleanup: list[tuple[Account, str, str]]
) -> None:
    name = unique()
    cleanup.append((running.alice, name, "user"))
    with running.client(running.alice) as alice:
        assert put(alice, name).status_code == 201
    for other in (running.bob, running.carol):
        with running.client(other) as c:
            assert c.get(f"/v1/secrets/{name}").status_code == 404
            assert c.delete(f"/v1/secrets/{name}").status_code == 404
            assert name not in c.get("/v1/secrets").text
        assert name not in grants(running, other)
    with running.client(running.alice) as alice:
        assert alice.get(f"/v1/secrets/{name}").status_code == 200


def test_tenant_scope_needs_a_tenant_admin_and_a_users_own_secret_wins(
    running: Running, cleanup: list[tuple[Account, str, str]]
) -> None:
    name = unique("SHARED")
    cleanup.append((running.alice, name, "user"))
    with running.client(running.alice) as alice, running.client(running.bob) as bob:
        refused = put(alice, name, scope="tenant")
        assert (
            refused.status_code == 403 and "admin user admin acme alice" in refused.json()["error"]["message"]
        )
        assert admin(running, "user", "admin", "acme", "bob") == (0, "bob of acme is a tenant admin\n")
        try:
            shared = bob.put(
                f"/v1/secrets/{name}",
                json={"value": "tenant-value-1", "hosts": ["a.example.com"], "scope": "tenant"},
            )
            assert shared.status_code == 201 and shared.json()["scope"] == "tenant", shared.text
            seen = alice.get(f"/v1/secrets/{name}").json()
            assert seen["scope"] == "tenant" and seen["active"]
            assert grants(running, running.alice)[name].value == "tenant-value-1"
            assert alice.delete(f"/v1/secrets/{name}", params={"scope": "tenant"}).status_code == 403
            own = alice.put(
                f"/v1/secrets/{name}", json={"value": "alice-value-1", "hosts": ["b.example.com"]}
            )
            assert own.status_code == 201
            listed = [s for s in alice.get("/v1/secrets").json()["secrets"] if s["name"] == name]
            assert [(s["scope"], s["active"]) for s in listed] == [("user", True), ("tenant", False)]
            mine = grants(running, running.alice)[name]
            assert (mine.value, mine.hosts) == ("alice-value-1", ("b.example.com",))
            assert grants(running, running.bob)[name].value == "tenant-value-1"
            assert name not in grants(running, running.carol)
            assert alice.get(f"/v1/secrets/{name}", params={"scope": "tenant"}).json()["hosts"] == [
                "a.example.com"
            ]
            assert bob.delete(f"/v1/secrets/{name}", params={"scope": "tenant"}).status_code == 204
            assert grants(running, running.bob).get(name) is None
        finally:  # bob deletes it while still an admin, even when the test failed halfway
            bob.delete(f"/v1/secrets/{name}", params={"scope": "tenant"})
            assert admin(running, "user", "admin", "acme", "bob", "--off")[0] == 0
        assert put(bob, unique(), scope="tenant").status_code == 403


def test_mark_used_sets_the_last_use_of_the_secret_the_user_gets(
    running: Running, cleanup: list[tuple[Account, str, str]]
) -> None:
    name = unique()
    cleanup.append((running.alice, name, "user"))
    with running.client(running.alice) as alice:
        assert put(alice, name).status_code == 201
        store = running.server.service.secrets
        with running.db.engine.connect() as conn:
            tenant_id, user_id = conn.execute(
                text("SELECT tenant_id, owner_id FROM secrets WHERE name = :n"), {"n": name}
            ).one()
        asyncio.run(store.mark_used(tenant_id, user_id, [name]))
        assert alice.get(f"/v1/secrets/{name}").json()["last_used_at"] is not None


def test_the_row_holds_no_form_of_the_value_the_key_file_is_0600_and_rotation_keeps_values(
    running: Running, cleanup: list[tuple[Account, str, str]]
) -> None:
    name, secret = unique(), value()
    cleanup.append((running.alice, name, "user"))
    with running.client(running.alice) as alice:
        assert (
            alice.put(f"/v1/secrets/{name}", json={"value": secret, "hosts": ["x.example.com"]}).status_code
            == 201
        )
    key_file = running.data_dir / "secrets.key"
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
    keys_before = key_file.read_text().split()

    def row() -> str:
        with running.db.engine.connect() as conn:
            found = conn.execute(text("SELECT * FROM secrets WHERE name = :n"), {"n": name}).one()
        return repr(tuple(found))

    before = row()
    for form in forms(secret):
        assert form not in before
    assert secret not in repr(keys_before)

    code, out = admin(running, "secrets", "rotate-key")
    assert code == 0 and "re-encrypted" in out and str(key_file) in out, out
    keys_after = key_file.read_text().split()
    assert keys_after[1:] == keys_before and len(keys_after) == len(keys_before) + 1
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
    after = row()
    assert after != before and secret not in after
    assert grants(running, running.alice)[name].value == secret  # the running server follows the new file
    fresh = Keyring(running.data_dir, env="")
    with running.db.engine.connect() as conn:
        token = conn.execute(
            select(text("ciphertext")).select_from(text("secrets")).where(text("name = :n")), {"n": name}
        ).scalar_one()
    assert fresh.decrypt(token) == secret
    only_new = Keyring(running.data_dir, env=keys_after[0])
    assert only_new.decrypt(token) == secret  # encrypted with the new key alone


def test_keys_from_the_environment_and_bad_keys(tmp_path: Any) -> None:
    from cryptography.fernet import Fernet

    new, old = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    token = Keyring(tmp_path, env=old).encrypt("value-123456")
    both = Keyring(tmp_path, env=f"{new},{old}")
    assert both.decrypt(token) == "value-123456"
    assert Keyring(tmp_path, env=new).decrypt(both.encrypt("v-abcdefgh")) == "v-abcdefgh"
    assert not (tmp_path / "secrets.key").exists()  # the environment's keys: no file
    with pytest.raises(ConfigError, match="cannot be decrypted"):
        Keyring(tmp_path, env=new).decrypt(token)
    with pytest.raises(ConfigError, match="not a Fernet key"):
        Keyring(tmp_path, env="not-a-key").encrypt("x")
    loose = tmp_path / "loose"
    Keyring(loose, env="").encrypt("x")
    os.chmod(loose / "secrets.key", 0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        Keyring(loose, env="").encrypt("x")


def test_the_secrets_commands_set_list_and_remove(
    running: Running, cleanup: list[tuple[Account, str, str]]
) -> None:
    name, secret = unique(), value()
    cleanup.append((running.alice, name, "user"))
    env = {"THINKBOX_SERVER": running.url, "THINKBOX_API_KEY": running.alice.key, "COLUMNS": "250"}

    def tb(*args: str, stdin: str | None = None) -> tuple[int, str]:
        result = cli.invoke(app, ["secrets", *args], env=env, input=stdin)
        return result.exit_code, result.output

    code, out = tb(
        "set", name, "--host", "api.example.com", "--header", "X-Key: {secret}", stdin=secret + "\n"
    )
    assert code == 0 and f"stored {name} (user)" in out and secret not in out, out
    assert grants(running, running.alice)[name].value == secret  # the newline `echo` adds is not kept
    code, out = tb("set", name, "--host", "*", stdin=secret)
    assert code == 1 and "match every host" in out
    code, out = tb("list")
    assert code == 0 and name in out and "X-Key: {secret}" in out and secret not in out
    assert tb("rm", name) == (0, f"deleted {name} (user)\n")
    code, out = tb("rm", name)
    assert code == 1 and "404 not_found" in out
    code, out = tb("set", name, "--host", "api.example.com", stdin="")
    assert code == 1 and "no value on stdin" in out


def test_the_secrets_commands_refuse_a_name_that_is_no_name_and_a_value_that_is_not_text(
    running: Running, cleanup: list[tuple[Account, str, str]]
) -> None:
    """A name with ? / or .. would reach another URL or be cut (``A?b`` stored as ``A``): refused before
    anything is sent, naming it; bytes that are not UTF-8 on stdin are refused, not a traceback."""
    name = unique()
    cleanup.append((running.alice, name, "user"))
    env = {"THINKBOX_SERVER": running.url, "THINKBOX_API_KEY": running.alice.key, "COLUMNS": "250"}
    for bad in (f"{name}?x", f"../{name}", f"{name}/x"):
        result = cli.invoke(app, ["secrets", "set", bad, "--host", "api.example.com"], env=env, input=value())
        assert result.exit_code == 1 and f"secret name {bad!r} is not a valid name" in result.output
        result = cli.invoke(app, ["secrets", "rm", bad], env=env)
        assert result.exit_code == 1 and f"secret name {bad!r} is not a valid name" in result.output
    assert name not in grants(running, running.alice)
    result = cli.invoke(
        app, ["secrets", "set", name, "--host", "api.example.com"], env=env, input=b"\xff\xfe\x00binary-key"
    )
    assert result.exit_code == 1 and "not UTF-8 text" in result.output, result.output
    assert name not in grants(running, running.alice)
