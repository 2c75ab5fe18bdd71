"""The service's database: models (the tables), ``Database`` (engine, sessions, migrations)."""

from thinkbox.service.db.engine import Database, database_url, head_revision
from thinkbox.service.db.models import (
    ApiKey,
    Base,
    Run,
    RunEvent,
    SessionRow,
    Tenant,
    User,
    new_id,
)

__all__ = [
    "ApiKey",
    "Base",
    "Database",
    "Run",
    "RunEvent",
    "SessionRow",
    "Tenant",
    "User",
    "database_url",
    "head_revision",
    "new_id",
]
