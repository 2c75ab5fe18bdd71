"""The egress proxy's rules without a session: host patterns, addresses, swapping and scrubbing, the
admin commands and the database rows they write (SQLite and PostgreSQL)."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from thinkbox.cli.app import app
from thinkbox.errors import ConfigError
from thinkbox.service import accounts
from thinkbox.service.db.engine import Database
from thinkbox.service.egress import rules
from thinkbox.service.egress.policy import Policy, index_pages, parse_pattern, special_address
from thinkbox.service.egress.swap import Refused, SessionSecrets
from thinkbox.service.secrets.grant import SecretGrant

runner = CliRunner()


@pytest.mark.parametrize(
    ("text", "host", "port"),
    [
        ("API.example.com", "api.example.com", None),
        ("api.example.com:8443", "api.example.com", 8443),
        ("*.example.com", "*.example.com", None),
        ("127.0.0.1", "127.0.0.1", None),
        ("[::1]:80", "::1", 80),
    ],
)
def test_patterns_parse_hosts_ports_and_wildcards(text: str, host: str, port: int | None) -> None:
    pattern = parse_pattern(text)
    assert (pattern.host, pattern.port) == (host, port)
    assert parse_pattern(str(pattern)) == pattern


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("*", "every host"),
        ("*com", "every host"),
        ("*.com", "not a host name pattern"),
        ("http://example.com/", "not a host"),
        ("example.com:99999", "port"),
        ("exa mple.com", "not a host"),
        ("", "not a host"),
    ],
)
def test_bad_patterns_are_refused_saying_what_to_fix(text: str, says: str) -> None:
    with pytest.raises(ConfigError, match=says):
        parse_pattern(text)


def test_a_wildcard_matches_sub_domains_only_and_a_deny_wins() -> None:
    policy = Policy(allow=[parse_pattern("*.example.com"), parse_pattern("api.other.org:443")])
    assert policy.decide("a.example.com", 443) is None
    assert policy.decide("example.com", 443) is not None
    assert policy.decide("api.other.org", 80) is not None
    policy.deny.append(parse_pattern("bad.example.com"))
    assert "denied" in (policy.decide("bad.example.com", 443) or "")
    # a private address is reachable only through a rule naming the address, not the name
    assert not policy.private_allowed("api.other.org", 443, "10.0.0.5")
    policy.allow.append(parse_pattern("10.0.0.5:443"))
    assert policy.private_allowed("api.other.org", 443, "10.0.0.5")
    assert not policy.private_allowed("api.other.org", 8443, "10.0.0.5")


def test_only_the_index_api_pages_teach_hosts_to_reach() -> None:
    policy = Policy()
    policy.index_pages = index_pages(["https://index.example/simple"])
    policy.index = [p for p, _ in policy.index_pages]
    assert policy.decide("index.example", 443) is None and policy.decide("files.example", 443) is not None
    assert policy.is_index_page("index.example", 443, "/simple/numpy/")
    assert not policy.is_index_page("index.example", 443, "/project/numpy/")  # descriptions: anyone's links
    policy.learn_links(b'<a href="https://files.example/packages/x.whl#sha256=00">x.whl</a>', b"text/html")
    assert policy.decide("files.example", 443) is None
    assert policy.private_allowed("files.example", 443, "10.0.0.1")


@pytest.mark.parametrize(
    ("address", "special"),
    [
        ("127.0.0.1", True),
        ("10.1.2.3", True),
        ("192.168.0.1", True),
        ("169.254.169.254", True),
        ("::1", True),
        ("fe80::1", True),
        ("::ffff:127.0.0.1", True),
        ("0.0.0.0", True),
        ("8.8.8.8", False),
        ("2001:4860:4860::8888", False),
    ],
)
def test_private_loopback_and_link_local_addresses_are_special(address: str, special: bool) -> None:
    assert special_address(address) is special


def test_placeholders_are_swapped_through_the_template_and_answers_scrubbed_in_every_form() -> None:
    value = "s3cr3t-value-0123456789"
    secrets = SessionSecrets(
        [SecretGrant("TOKEN", value, ("api.example.com",), header="Authorization: Bearer {secret}")]
    )
    placeholder = secrets.env()["TOKEN"].encode()
    headers = [(b"x-api", placeholder), (b"accept", b"*/*")]
    out, used = secrets.swap("api.example.com", 443, "GET", "/", b"/", headers, b"")
    assert used == ["TOKEN"] and (b"authorization", b"Bearer " + value.encode()) in out
    assert all(placeholder not in v for _, v in out)
    with pytest.raises(Refused, match=r"may not be sent to evil\.example\.net"):
        secrets.swap("evil.example.net", 443, "GET", "/", b"/", headers, b"")
    # an answer that echoes the value, split anywhere, in any form, comes back with the placeholder
    encoded = base64.b64encode(b"prefix:" + value.encode())
    answer = b"raw " + value.encode() + b" b64 " + encoded + b" hex " + value.encode().hex().encode()
    for cut in range(1, len(answer), 7):
        scrubber = secrets.scrubber()
        seen = scrubber.feed(answer[:cut]) + scrubber.feed(answer[cut:]) + scrubber.flush()
        assert value.encode() not in seen and value.encode().hex().encode() not in seen
        assert base64.b64encode(value.encode())[:12] not in seen
        assert seen.count(placeholder) == 3


@pytest.fixture
def data_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for key in list(os.environ):
        if key.startswith("THINKBOX_") and key != "THINKBOX_TEST_ALLOW_NO_POSTGRES":
            monkeypatch.delenv(key)
    monkeypatch.setenv("THINKBOX_CONFIG", str(tmp_path / "absent.toml"))
    return tmp_path / "data"


def _admin(data_dir: Path, *args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["admin", *args, "--data-dir", str(data_dir)])
    return result.exit_code, result.stdout + result.stderr


def test_admin_network_allow_deny_list(data_dir: Path) -> None:
    assert _admin(data_dir, "tenant", "create", "acme")[0] == 0
    assert _admin(data_dir, "network", "allow", "acme", "api.example.com:443") == (
        0,
        "allow api.example.com:443 for tenant acme; running servers apply it within seconds\n",
    )
    code, out = _admin(data_dir, "network", "deny", "acme", "api.example.com:443")
    assert code == 0 and "(was allow)" in out
    assert _admin(data_dir, "network", "allow", "acme", "*.example.com")[0] == 0
    code, out = _admin(data_dir, "network", "list", "acme")
    assert code == 0 and "api.example.com:443" in out and "deny" in out and "*.example.com" in out
    code, out = _admin(data_dir, "network", "allow", "acme", "*")
    assert code == 2 and "would match every host" in out
    code, out = _admin(data_dir, "network", "allow", "nobody", "example.com")
    assert code == 2 and "thinkbox admin tenant create nobody" in out


def test_rules_are_kept_per_tenant(database: Database) -> None:
    acme = accounts.create_tenant(database, "acme")
    globex = accounts.create_tenant(database, "globex")
    rules.set_rule(database, "acme", "api.example.com", "allow")
    rules.set_rule(database, "acme", "*.ads.example", "deny")
    allow, deny = rules.patterns(database, acme.id)
    assert [str(p) for p in allow] == ["api.example.com"] and [str(p) for p in deny] == ["*.ads.example"]
    assert rules.patterns(database, globex.id) == ([], [])
    assert rules.remove_rule(database, "acme", "api.example.com")
    assert rules.patterns(database, acme.id)[0] == []
