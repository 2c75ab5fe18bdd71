"""Per-user and per-tenant storage on disk: the files API's operations, quotas, and the view a sandbox
session gets (:mod:`.store` says how, and why). Errors and their HTTP statuses: :mod:`.errors`."""

from __future__ import annotations

from thinkbox.service.storage.errors import (
    BadPath,
    Conflict,
    DirectoryNotEmpty,
    IsADirectory,
    NameTaken,
    NotADirectory,
    NotFound,
    QuotaExceeded,
    StorageError,
    TooLarge,
)
from thinkbox.service.storage.layout import FOLDER_ID
from thinkbox.service.storage.paths import check_path
from thinkbox.service.storage.quota import Usage
from thinkbox.service.storage.store import FileEntry, Scope, Storage

__all__ = [
    "FOLDER_ID",
    "BadPath",
    "Conflict",
    "DirectoryNotEmpty",
    "FileEntry",
    "IsADirectory",
    "NameTaken",
    "NotADirectory",
    "NotFound",
    "QuotaExceeded",
    "Scope",
    "Storage",
    "StorageError",
    "TooLarge",
    "Usage",
    "check_path",
]
