"""S3 over HTTPS with a private CA: `s3_secure` and `s3_ca_file` reach the client.

The local SeaweedFS serves plain HTTP, so a TLS relay with a certificate of the test's
own stands in front of the shared S3, as a load balancer would."""

from __future__ import annotations

import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from pydantic import SecretStr
from urllib3.exceptions import MaxRetryError, SSLError

from mint.backends.s3 import S3Settings
from mint.settings import S3Options
from tests.infra.smoke import s3_round_trip


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (its own CA) and its key."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    request = ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
    subject = ["-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"]
    files = ["-keyout", str(key), "-out", str(cert)]
    subprocess.run(["openssl", *request, *subject, *files], check=True, capture_output=True)
    return cert, key


def _pipe(source: socket.socket, target: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            target.sendall(data)
    except OSError:
        pass  # the other direction closed both
    finally:
        source.close()
        target.close()


@contextmanager
def tls_relay(upstream: str, cert: Path, key: Path) -> Iterator[str]:
    """host:port where TLS with `cert` ends and bytes go on to `upstream`."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    listener = socket.create_server(("127.0.0.1", 0))
    host, port = upstream.rsplit(":", 1)

    def serve() -> None:
        while True:
            try:
                raw, _ = listener.accept()
            except OSError:
                return  # the listener closed
            try:
                client = context.wrap_socket(raw, server_side=True)
            except OSError:  # a client that does not trust the certificate
                raw.close()
                continue
            server = socket.create_connection((host, int(port)))
            for ends in ((client, server), (server, client)):
                threading.Thread(target=_pipe, args=ends, daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield f"127.0.0.1:{listener.getsockname()[1]}"
    finally:
        listener.close()


def test_https_with_the_ca_from_the_settings_works_and_without_it_is_refused(
    s3_settings: S3Settings, certificate: tuple[Path, Path]
) -> None:
    cert, key = certificate
    with tls_relay(s3_settings.endpoint, cert, key) as endpoint:
        options = S3Options(
            s3_endpoint=endpoint,
            s3_access_key=s3_settings.access_key,
            s3_secret_key=SecretStr(s3_settings.secret_key),
            s3_secure=True,
            s3_ca_file=cert,
        )
        assert s3_round_trip(options.s3()) == b"hello"

        system_cas = S3Settings(endpoint, s3_settings.access_key, s3_settings.secret_key, True)
        with pytest.raises((SSLError, MaxRetryError), match="CERTIFICATE_VERIFY_FAILED"):
            s3_round_trip(system_cas, timeout_s=5)
        plain = S3Settings(endpoint, s3_settings.access_key, s3_settings.secret_key)
        with pytest.raises(MaxRetryError, match="Connection aborted"):  # HTTP to TLS
            s3_round_trip(plain, timeout_s=5)
