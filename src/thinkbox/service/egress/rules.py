"""A tenant's network rules in the database (``thinkbox admin network allow|deny|list``)."""

from __future__ import annotations

from sqlalchemy import delete, select

from thinkbox.errors import ConfigError
from thinkbox.service import accounts
from thinkbox.service.db.engine import Database
from thinkbox.service.db.models import NetworkRule
from thinkbox.service.egress.policy import Pattern, parse_pattern

ACTIONS = ("allow", "deny")


def set_rule(db: Database, tenant_name: str, host: str, action: str) -> tuple[NetworkRule, str | None]:
    """Allow or deny ``host`` (``HOST[:PORT]``) for the tenant; the rule, and the action it replaced."""
    if action not in ACTIONS:
        raise ConfigError(f"unknown action {action!r}: use allow or deny")
    pattern = str(parse_pattern(host))
    tenant = accounts.get_tenant(db, tenant_name)
    with db.session() as s, s.begin():
        row = s.scalar(
            select(NetworkRule).where(NetworkRule.tenant_id == tenant.id, NetworkRule.pattern == pattern)
        )
        before = None
        if row is None:
            row = NetworkRule(tenant_id=tenant.id, pattern=pattern, action=action)
            s.add(row)
        else:
            before, row.action = row.action, action
        s.flush()
        s.expunge(row)
    return row, before


def remove_rule(db: Database, tenant_name: str, host: str) -> bool:
    """Forget the tenant's rule for ``host``; False when it had none."""
    pattern = str(parse_pattern(host))
    tenant = accounts.get_tenant(db, tenant_name)
    with db.session() as s, s.begin():
        done = s.execute(
            delete(NetworkRule).where(NetworkRule.tenant_id == tenant.id, NetworkRule.pattern == pattern)
        )
    return bool(getattr(done, "rowcount", 0))


def list_rules(db: Database, tenant_name: str) -> list[NetworkRule]:
    tenant = accounts.get_tenant(db, tenant_name)
    with db.session() as s:
        query = select(NetworkRule).where(NetworkRule.tenant_id == tenant.id).order_by(NetworkRule.pattern)
        return list(s.scalars(query))


def patterns(db: Database, tenant_id: str) -> tuple[list[Pattern], list[Pattern]]:
    """The tenant's (allowed, denied) patterns."""
    allow: list[Pattern] = []
    deny: list[Pattern] = []
    with db.session() as s:
        for row in s.scalars(select(NetworkRule).where(NetworkRule.tenant_id == tenant_id)):
            (allow if row.action == "allow" else deny).append(parse_pattern(row.pattern))
    return allow, deny
