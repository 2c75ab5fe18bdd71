"""Tools: a tenant's Python modules that its sessions import (``tools``), with every version kept.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None

ID = sa.String(length=40)


def upgrade() -> None:
    op.create_table(
        "tools",
        sa.Column("id", ID, nullable=False),
        sa.Column("tenant_id", ID, nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("owner_id", ID, nullable=True),
        sa.Column("active_version", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], name=op.f("fk_tools_tenant_id_tenants")),
        sa.ForeignKeyConstraint(["owner_id"], ["users.id"], name=op.f("fk_tools_owner_id_users")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tools")),
        sa.UniqueConstraint("tenant_id", "name", name="uq_tools_tenant_id_name"),
    )
    op.create_index(op.f("ix_tools_tenant_id"), "tools", ["tenant_id"])
    op.create_table(
        "tool_versions",
        sa.Column("tool_id", ID, nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("tests", sa.Text(), nullable=False),
        sa.Column("functions", sa.Text(), nullable=False),
        sa.Column("packages", sa.Text(), server_default="[]", nullable=False),
        sa.Column("secrets", sa.Text(), server_default="[]", nullable=False),
        sa.Column("tests_passed", sa.Integer(), server_default="0", nullable=False),
        sa.Column("author_id", ID, nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(["tool_id"], ["tools.id"], name=op.f("fk_tool_versions_tool_id_tools")),
        sa.ForeignKeyConstraint(["author_id"], ["users.id"], name=op.f("fk_tool_versions_author_id_users")),
        sa.PrimaryKeyConstraint("tool_id", "version", name="pk_tool_versions"),
    )


def downgrade() -> None:
    op.drop_table("tool_versions")
    op.drop_table("tools")
