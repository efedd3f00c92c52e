"""TLS for MinT's gRPC servers and clients: which files, and the credentials they make.

One CA signs every peer: a server presents `cert_file`/`key_file` and, when
`require_client_cert`, accepts only clients whose certificate `ca_file` signed (mutual
TLS, as between the router and the nodes); a client verifies the server against
`ca_file` and, when it has a certificate of its own, presents it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import grpc


@dataclass(frozen=True)
class TlsFiles:
    cert_file: Path | None = None
    key_file: Path | None = None
    ca_file: Path | None = None
    require_client_cert: bool = False

    def server_credentials(self) -> grpc.ServerCredentials:
        if self.cert_file is None or self.key_file is None:
            raise ValueError("a TLS server needs a certificate and its key (cert_file, key_file)")
        if self.require_client_cert and self.ca_file is None:
            raise ValueError("requiring client certificates needs the CA that signs them")
        return grpc.ssl_server_credentials(
            [(self.key_file.read_bytes(), self.cert_file.read_bytes())],
            root_certificates=self.ca_file.read_bytes() if self.ca_file else None,
            require_client_auth=self.require_client_cert,
        )

    def channel_credentials(self) -> grpc.ChannelCredentials:
        own = self.cert_file is not None and self.key_file is not None
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca_file.read_bytes() if self.ca_file else None,
            private_key=self.key_file.read_bytes() if own and self.key_file else None,
            certificate_chain=self.cert_file.read_bytes() if own and self.cert_file else None,
        )
