"""Network: a tenant's allow-list of hosts for the egress proxy.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None

ID = sa.String(length=40)


def upgrade() -> None:
    op.create_table(
        "network_rules",
        sa.Column("id", ID, nullable=False),
        sa.Column("tenant_id", ID, nullable=False),
        sa.Column("pattern", sa.String(length=270), nullable=False),
        sa.Column("action", sa.String(length=8), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_network_rules_tenant_id_tenants")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_network_rules")),
        sa.UniqueConstraint("tenant_id", "pattern", name="uq_network_rules_tenant_id_pattern"),
    )
    op.create_index(op.f("ix_network_rules_tenant_id"), "network_rules", ["tenant_id"])


def downgrade() -> None:
    op.drop_table("network_rules")
