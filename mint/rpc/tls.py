"""TLS for MinT's gRPC servers and clients: which files, and the credentials they make.

One CA signs every peer: a server presents `cert_file`/`key_file` and, when
`require_client_cert`, accepts only clients whose certificate `ca_file` signed (mutual
TLS, as between the router and the nodes); a client verifies the server against
`ca_file` and, when it has a certificate of its own, presents it.

A client dialling an address that its server's certificate does not name (the router
dialling a node's pod IP) verifies the certificate against a fixed name instead
(`server_name_options`): every node's certificate carries that name (`mint-node`).

The files are read when credentials are made (at start): a renewed certificate takes
effect when the process restarts.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import grpc

NODE_SERVER_NAME = "mint-node"  # every node's certificate names it; the router checks it
ROUTER_PEER_NAME = "mint-router"  # the router's certificate names it; nodes trust it
# The names in a verified client certificate, as gRPC's auth context lists them.
_PEER_NAME_KEYS = ("x509_common_name", "x509_subject_alternative_name")


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


def dialer(tls: TlsFiles | None, server_name: str | None = None) -> Callable[[str], grpc.Channel]:
    """Opens channels to servers: plaintext without `tls`, else TLS (verified against
    `server_name` when given, presenting our certificate when we have one). The files
    are read once, here."""
    if tls is None:
        return grpc.insecure_channel
    credentials = tls.channel_credentials()
    options = server_name_options(server_name)
    return lambda address: grpc.secure_channel(address, credentials, options=options)
