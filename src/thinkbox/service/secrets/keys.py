"""The keys that encrypt secret values at rest (Fernet, newest first), kept outside the database.

From the environment variable ``THINKBOX_SECRETS_KEY`` (comma-separated Fernet keys, newest first) when it
is set, else from the file ``DATA_DIR/secrets.key`` (one key per line, newest first), created with mode
0600 on first use. Values are encrypted with the newest key and decrypted with any of them
(``MultiFernet``); :meth:`Keyring.rotate` puts a new key first and re-encrypts with it. The file is read
again whenever it changes, so a running server follows a rotation done by ``thinkbox admin secrets
rotate-key`` beside it.

The same keys sign what the service hands out and must later recognise as its own (:meth:`Keyring.macs`:
the names of image links, which sandbox code could otherwise mint); a key derived from each Fernet key is
used, never the Fernet key itself.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import stat
import threading
from collections.abc import Iterable
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from thinkbox.errors import ConfigError

ENV_VAR = "THINKBOX_SECRETS_KEY"
KEY_FILE = "secrets.key"


class Keyring:
    """The Fernet keys of one data dir (or of the environment)."""

    def __init__(self, data_dir: Path, env: str | None = None) -> None:
        self.path = Path(data_dir) / KEY_FILE
        self.env = env if env is not None else os.environ.get(ENV_VAR)
        self._lock = threading.Lock()
        self._loaded: tuple[int, MultiFernet, list[bytes]] | None = None
        """(the file's mtime when read, its keys, their MAC keys); the environment's keys are read once."""

    @property
    def source(self) -> str:
        """Where the keys come from, for messages."""
        return f"the environment variable {ENV_VAR}" if self.env else str(self.path)

    # -- using the keys --------------------------------------------------------------------------------
    def encrypt(self, value: str) -> str:
        return self._fernet().encrypt(value.encode()).decode()

    def decrypt(self, token: str) -> str:
        try:
            return self._fernet().decrypt(token.encode()).decode()
        except InvalidToken:
            raise ConfigError(
                f"a stored secret cannot be decrypted with the keys in {self.source}: restore the key it was "
                f"encrypted with ({ENV_VAR} or {self.path}), or set the secret again"
            ) from None

    def macs(self, message: bytes) -> list[str]:
        """HMAC-SHA256 of ``message`` (hex) under each key, newest first: sign with the first, accept any
        (a rotation leaves what the older keys signed valid until they are dropped from the key file)."""
        return [hmac.new(key, message, hashlib.sha256).hexdigest() for key in self._keys()[1]]

    def rotate(self, tokens: Iterable[str]) -> list[str]:
        """``tokens`` re-encrypted with the newest key (call after :meth:`add_key`)."""
        fernet = self._fernet()
        out = []
        for token in tokens:
            try:
                out.append(fernet.rotate(token.encode()).decode())
            except InvalidToken:
                raise ConfigError(
                    f"a stored secret cannot be decrypted with the keys in {self.source}: put the key "
                    "it was encrypted with back (after the new one) and run rotate-key again; no secret "
                    "was changed"
                ) from None
        return out

    def add_key(self) -> str:
        """Put a new key first in the key file (the older ones stay, after it); where it went. With
        ``THINKBOX_SECRETS_KEY`` set, the environment's first key is the newest: nothing is written."""
        if self.env:
            return f"{ENV_VAR} (its first key)"
        with self._lock:
            old = self._read_file() if self.path.exists() else []
            _write_keys(self.path, [Fernet.generate_key().decode(), *old])
            self._loaded = None
        return str(self.path)

    # -- loading ---------------------------------------------------------------------------------------
    def _fernet(self) -> MultiFernet:
        return self._keys()[0]

    def _keys(self) -> tuple[MultiFernet, list[bytes]]:
        with self._lock:
            if self.env:
                if self._loaded is None:
                    self._loaded = (0, *_multi(self.env.split(","), ENV_VAR))
                return self._loaded[1:]
            mtime = self._mtime()
            if self._loaded is None or self._loaded[0] != mtime:
                if mtime is None:
                    self._create()
                    mtime = self._mtime()
                self._loaded = (mtime or 0, *_multi(self._read_file(), str(self.path)))
            return self._loaded[1:]

    def _mtime(self) -> int | None:
        try:
            return self.path.stat().st_mtime_ns
        except FileNotFoundError:
            return None

    def _create(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process made it just now
            return
        with os.fdopen(fd, "w") as f:
            os.fchmod(f.fileno(), 0o600)
            f.write(Fernet.generate_key().decode() + "\n")

    def _read_file(self) -> list[str]:
        info = self.path.stat()
        if stat.S_IMODE(info.st_mode) & 0o077:
            raise ConfigError(
                f"the secrets key file {self.path} can be read by other users (mode "
                f"{stat.S_IMODE(info.st_mode):o}): chmod 600 {self.path}"
            )
        return [line.strip() for line in self.path.read_text().splitlines() if line.strip()]


def _multi(keys: Iterable[str], where: str) -> tuple[MultiFernet, list[bytes]]:
    """The keys as one MultiFernet, and a MAC key derived from each (see :meth:`Keyring.macs`)."""
    fernets, macs = [], []
    for key in (k.strip() for k in keys):
        if not key:
            continue
        try:
            fernets.append(Fernet(key))
            macs.append(hmac.new(key.encode(), b"thinkbox: signing key", hashlib.sha256).digest())
        except ValueError:
            raise ConfigError(
                f"{where} holds something that is not a Fernet key (32 url-safe base64-encoded bytes): make "
                "one with python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key())'"
            ) from None
    if not fernets:
        raise ConfigError(f"{where} holds no key: give at least one Fernet key")
    return MultiFernet(fernets), macs


def _write_keys(path: Path, keys: list[str]) -> None:
    """Replace the key file in one rename, mode 0600 from the start."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            os.fchmod(f.fileno(), 0o600)
            f.write("".join(key + "\n" for key in keys))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
