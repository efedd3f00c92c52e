"""TLS for MinT's gRPC servers and clients: which files, and the credentials they make.

One CA signs every peer: a server presents `cert_file`/`key_file` and, when
`require_client_cert`, accepts only clients whose certificate `ca_file` signed (mutual
TLS, as between the router and the nodes); a client verifies the server against
`ca_file` and, when it has a certificate of its own, presents it.

A client dialling an address that its server's certificate does not name (the router
dialling a node's pod IP) verifies the certificate against a fixed name instead
(`server_name_options`): every node's certificate carries that name (`mint-node`).

The files are read when credentials are made (at start): a renewed certificate takes
effect when the process restarts. `TlsFiles.check` reads them first, so that a file that
is not PEM, or a key that is not the certificate's, is named at start-up rather than
reported by gRPC as a failed bind.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, cast

import grpc

if TYPE_CHECKING:  # cryptography comes with the server install; the client needs none
    from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
    from cryptography.x509 import Certificate

NODE_SERVER_NAME = "mint-node"  # every node's certificate names it; the router checks it
ROUTER_PEER_NAME = "mint-router"  # the router's certificate names it; nodes trust it
# The names in a verified client certificate, as gRPC's auth context lists them.
_PEER_NAME_KEYS = ("x509_common_name", "x509_subject_alternative_name")


class BadTlsFile(ValueError):
    """A TLS file that gRPC could not use; `setting` is the one to fix."""

    def __init__(self, setting: str, message: str) -> None:
        super().__init__(message)
        self.setting = setting


@dataclass(frozen=True)
class TlsFiles:
    cert_file: Path | None = None
    key_file: Path | None = None
    ca_file: Path | None = None
    require_client_cert: bool = False

    @property
    def has_identity(self) -> bool:
        """A certificate and key to present (as a server, or as a client in mutual TLS)."""
        return self.cert_file is not None and self.key_file is not None

    def check(self) -> None:
        """Raise BadTlsFile unless every file given is readable PEM of its kind (the
        certificates, an unencrypted private key) and the key is the certificate's."""
        certificate = _certificates(self.cert_file, "tls_cert_file")
        key = _private_key(self.key_file, "tls_key_file")
        _certificates(self.ca_file, "tls_ca_file")
        if certificate and key is not None and _spki(certificate[0]) != _spki(key):
            raise BadTlsFile(
                "tls_key_file",
                f"tls_key_file {self.key_file} and tls_cert_file {self.cert_file} do not "
                "match: the key is not the private key of the certificate (the first in its "
                "file); pass the key the certificate was issued for",
            )

    def server_credentials(self) -> grpc.ServerCredentials:
        if not self.has_identity:
            raise ValueError(
                "a TLS server needs a certificate and its key: set tls_cert_file and "
                "tls_key_file (MINT_TLS_CERT_FILE, MINT_TLS_KEY_FILE)"
            )
        if self.require_client_cert and self.ca_file is None:
            raise ValueError(
                "requiring client certificates needs the CA that signs them: set "
                "tls_ca_file (MINT_TLS_CA_FILE)"
            )
        return grpc.ssl_server_credentials(
            [(_read(self.key_file, "tls_key_file"), _read(self.cert_file, "tls_cert_file"))],
            root_certificates=_read(self.ca_file, "tls_ca_file") if self.ca_file else None,
            require_client_auth=self.require_client_cert,
        )

    def channel_credentials(self) -> grpc.ChannelCredentials:
        """Verify servers against `ca_file` (the system's roots without it); present our
        own certificate when we have one."""
        own = self.has_identity
        return grpc.ssl_channel_credentials(
            root_certificates=_read(self.ca_file, "tls_ca_file") if self.ca_file else None,
            private_key=_read(self.key_file, "tls_key_file") if own else None,
            certificate_chain=_read(self.cert_file, "tls_cert_file") if own else None,
        )


def server_name_options(server_name: str | None) -> list[tuple[str, str]]:
    """Channel options to verify the server's certificate against `server_name` rather
    than the host dialled (None: the host dialled)."""
    return [("grpc.ssl_target_name_override", server_name)] if server_name else []


def peer_names(context: grpc.ServicerContext) -> frozenset[str]:
    """The names (common name and subject alternative names) in the caller's verified
    client certificate. gRPC gives them only to a server that requires client
    certificates (which verifies them against its CA); elsewhere there are none."""
    # Each value is a list of bytes (the type stubs say bytes).
    auth = cast(Mapping[str, list[bytes]], context.auth_context())
    if auth.get("transport_security_type") != [b"ssl"]:
        return frozenset()
    return frozenset(v.decode() for key in _PEER_NAME_KEYS for v in auth.get(key, ()))


def _read(path: Path | None, setting: str) -> bytes:
    if path is None:  # only reached through the checks above
        raise ValueError(f"{setting} is not set")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ValueError(
            f"cannot read {setting} {path}: {exc.strerror}; point it at a PEM file"
        ) from exc


def _certificates(path: Path | None, setting: str) -> list[Certificate]:
    """The certificates in `path` (none when not given)."""
    from cryptography.x509 import load_pem_x509_certificates

    if path is None:
        return []
    data = _checked_read(path, setting)
    try:
        return load_pem_x509_certificates(data)
    except ValueError:
        raise BadTlsFile(
            setting,
            f"{setting} {path} is not a valid PEM certificate (-----BEGIN CERTIFICATE-----)"
            f"{_what_it_holds(data, 'CERTIFICATE')}",
        ) from None


def _private_key(path: Path | None, setting: str) -> PrivateKeyTypes | None:
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    if path is None:
        return None
    data = _checked_read(path, setting)
    try:
        return load_pem_private_key(data, password=None)
    except TypeError:  # a password protects it
        raise BadTlsFile(
            setting,
            f"{setting} {path} is an encrypted private key; gRPC reads unencrypted ones only "
            "(`openssl pkey -in KEY -out PLAIN`)",
        ) from None
    except ValueError:
        raise BadTlsFile(
            setting,
            f"{setting} {path} is not a valid PEM private key (-----BEGIN PRIVATE KEY-----)"
            f"{_what_it_holds(data, 'PRIVATE KEY')}",
        ) from None


def _checked_read(path: Path, setting: str) -> bytes:
    try:
        return _read(path, setting)
    except ValueError as exc:
        raise BadTlsFile(setting, str(exc)) from None


def _what_it_holds(data: bytes, wanted: str) -> str:
    """Why `data` is not the `wanted` PEM ("CERTIFICATE" or "PRIVATE KEY"), when it is
    plain: the file is empty, or holds only the other kind (cert and key swapped)."""
    if not data.strip():
        return ": the file is empty"
    other = "PRIVATE KEY" if wanted == "CERTIFICATE" else "CERTIFICATE"
    if f"{other}-----".encode() in data and f"{wanted}-----".encode() not in data:
        return f": it holds a {other.lower()} (are the two files swapped?)"
    return ""


def _spki(item: Certificate | PrivateKeyTypes) -> bytes:
    """The public key of a certificate or of a private key, as comparable bytes."""
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    return item.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)


def dialer(tls: TlsFiles | None, server_name: str | None = None) -> Callable[[str], grpc.Channel]:
    """Opens channels to servers: plaintext without `tls`, else TLS (verified against
    `server_name` when given, presenting our certificate when we have one). The files
    are read once, here."""
    if tls is None:
        return grpc.insecure_channel
    credentials = tls.channel_credentials()
    options = server_name_options(server_name)
    return lambda address: grpc.secure_channel(address, credentials, options=options)
