"""The installation's certificate authority: how the proxy reads a session's HTTPS requests.

The proxy terminates a session's TLS (``CONNECT host:443``) with a certificate for ``host`` signed by this
CA, which sessions trust (the bundle: the system's CAs plus this one, mounted read-only and named by
``SSL_CERT_FILE`` and friends); it then speaks TLS to the real host itself, verified against the system's
CAs. The CA is made once per installation under ``DATA_DIR/egress/ca`` (the key mode 0600, never mounted
into a session); leaf certificates are made on demand, one per host, and kept in memory.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import os
import ssl
import tempfile
import threading
from collections import OrderedDict
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CACHED_HOSTS = 512
_DAY = datetime.timedelta(days=1)


class Authority:
    """The CA of ``folder`` (made on first use) and the server contexts of the hosts it signed for."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.key_file = folder / "ca.key"
        self.cert_file = folder / "ca.pem"
        self._lock = threading.Lock()
        self._contexts: OrderedDict[str, ssl.SSLContext] = OrderedDict()
        self._key, self._cert = self._load_or_create()
        self._leaf_key = ec.generate_private_key(ec.SECP256R1())
        """One key for every leaf of this process: a new key per host would cost more than the rest."""

    def _load_or_create(self) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        if self.key_file.exists() and self.cert_file.exists():
            key = serialization.load_pem_private_key(self.key_file.read_bytes(), password=None)
            if not isinstance(key, ec.EllipticCurvePrivateKey):
                raise ValueError(f"{self.key_file} is not an EC key; delete {self.folder} to make a new CA")
            return key, x509.load_pem_x509_certificate(self.cert_file.read_bytes())
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "thinkbox egress CA")])
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _DAY)
            .not_valid_after(now + 3650 * _DAY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        _write(self.key_file, pem, 0o600)
        _write(self.cert_file, cert.public_bytes(serialization.Encoding.PEM), 0o644)
        return key, cert

    @property
    def cert_pem(self) -> bytes:
        return self._cert.public_bytes(serialization.Encoding.PEM)

    def write_bundle(self, path: Path, system_cafile: str | None = None) -> Path:
        """The sessions' trust store at ``path``: the system's CAs, then this CA (rewritten when changed)."""
        cafile = system_cafile or ssl.get_default_verify_paths().cafile
        system = Path(cafile).read_bytes() if cafile and Path(cafile).exists() else b""
        data = system.rstrip(b"\n") + b"\n" + self.cert_pem
        if not path.exists() or path.read_bytes() != data:
            path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
            _write(path, data, 0o644)
        return path

    def context_for(self, host: str) -> ssl.SSLContext:
        """A server context presenting a certificate for ``host`` (made and kept on first use)."""
        with self._lock:
            ctx = self._contexts.get(host)
            if ctx is not None:
                self._contexts.move_to_end(host)
                return ctx
        ctx = self._make_context(host)
        with self._lock:
            self._contexts[host] = ctx
            while len(self._contexts) > CACHED_HOSTS:
                self._contexts.popitem(last=False)
        return ctx

    def _make_context(self, host: str) -> ssl.SSLContext:
        try:
            alt: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(host))
        except ValueError:
            alt = x509.DNSName(host)
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host[:64])]))
            .issuer_name(self._cert.subject)
            .public_key(self._leaf_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _DAY)
            .not_valid_after(now + 30 * _DAY)
            .add_extension(x509.SubjectAlternativeName([alt]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()), critical=False
            )
            .sign(self._key, hashes.SHA256())
        )
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.set_alpn_protocols(["http/1.1"])
        # load_cert_chain reads files only: a private temporary file, removed at once
        fd, name = tempfile.mkstemp(prefix="leaf-", suffix=".pem", dir=self.folder)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(cert.public_bytes(serialization.Encoding.PEM))
                f.write(
                    self._leaf_key.private_bytes(
                        serialization.Encoding.PEM,
                        serialization.PrivateFormat.PKCS8,
                        serialization.NoEncryption(),
                    )
                )
            ctx.load_cert_chain(name)
        finally:
            os.unlink(name)
        return ctx


def _write(path: Path, data: bytes, mode: int) -> None:
    """Write ``data`` to ``path`` with ``mode`` from the start (a temporary file renamed into place)."""
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name)
        raise
