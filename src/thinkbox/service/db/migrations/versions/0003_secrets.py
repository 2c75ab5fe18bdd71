"""Secrets: named credentials of a user or a tenant, stored encrypted; tenant admins.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None

ID = sa.String(length=40)


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("tenant_admin", sa.Boolean(), server_default=sa.false(), nullable=False))
    op.create_table(
        "secrets",
        sa.Column("id", ID, nullable=False),
        sa.Column("tenant_id", ID, nullable=False),
        sa.Column("owner_id", ID, nullable=True),
        sa.Column("owner_key", ID, nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("ciphertext", sa.Text(), nullable=False),
        sa.Column("hosts", sa.Text(), nullable=False),
        sa.Column("header", sa.Text(), nullable=True),
        sa.Column("paths", sa.Text(), server_default="[]", nullable=False),
        sa.Column("methods", sa.Text(), server_default="[]", nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.Column("last_used_at", sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], name=op.f("fk_secrets_tenant_id_tenants")),
        sa.ForeignKeyConstraint(["owner_id"], ["users.id"], name=op.f("fk_secrets_owner_id_users")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_secrets")),
        sa.UniqueConstraint("tenant_id", "owner_key", "name", name="uq_secrets_tenant_id_owner_key_name"),
    )
    op.create_index(op.f("ix_secrets_tenant_id"), "secrets", ["tenant_id"])


def downgrade() -> None:
    op.drop_table("secrets")
    with op.batch_alter_table("users") as batch:
        batch.drop_column("tenant_admin")
