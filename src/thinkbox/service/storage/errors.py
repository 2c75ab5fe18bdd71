"""What the storage refuses, each with the HTTP status the API answers with and a stable code::

    StorageError (ThinkboxError)        status 500: the storage on disk is not as this module left it
    ├── BadPath                    400  not a path of the folder: '..', absolute, NUL or control
    │                                   characters, backslashes, over-long, a symlink on the way, another
    │                                   user's folder through the tenant scope, a bad tenant/user name
    ├── NotFound                   404  nothing there
    ├── Conflict                   409  something of another kind is there
    │   ├── IsADirectory                a folder where a file was asked for
    │   ├── NotADirectory               a file where a folder is needed (a parent of the path)
    │   ├── DirectoryNotEmpty           delete of a folder that still holds files
    │   └── NameTaken                   a user folder cannot be made: the shared folder has that name
    ├── TooLarge                   413  an upload over service.max_upload_mib
    └── QuotaExceeded              413  a user's or a tenant's bytes or files over their quota

Quotas answer 413 like an oversize upload (with code ``quota_exceeded``), not 507: the caller must act
(delete files, or an operator raises the setting), and a 5xx would read as a server fault.
"""

from __future__ import annotations

from thinkbox.errors import ThinkboxError


class StorageError(ThinkboxError):
    code = "storage_error"
    status = 500


class BadPath(StorageError):
    code = "bad_path"
    status = 400


class NotFound(StorageError):
    code = "not_found"
    status = 404


class Conflict(StorageError):
    code = "conflict"
    status = 409


class IsADirectory(Conflict):
    code = "is_a_directory"


class NotADirectory(Conflict):
    code = "not_a_directory"


class DirectoryNotEmpty(Conflict):
    code = "directory_not_empty"


class NameTaken(Conflict):
    code = "name_taken"


class TooLarge(StorageError):
    code = "too_large"
    status = 413


class QuotaExceeded(StorageError):
    """A quota is exceeded: ``scope`` (user | tenant), ``kind`` (bytes | files), what is ``used``, the
    ``limit`` and the ``setting`` that raises it; the message says all of it."""

    code = "quota_exceeded"
    status = 413

    def __init__(self, message: str, *, scope: str, kind: str, used: int, limit: int, setting: str) -> None:
        super().__init__(message)
        self.scope, self.kind, self.used, self.limit, self.setting = scope, kind, used, limit, setting
