"""An S3 server of a test's own (SeaweedFS), for tests that kill and restart it: the
shared stack's servers are never stopped."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from minio import Minio

from deploy.local.s3 import S3Server
from deploy.local.stack import S3_PORTS, free_ports
from mint.backends.s3 import S3Settings, client


@contextmanager
def own_s3(state_dir: Path) -> Iterator[S3Server]:
    """A started server; stopped (and its processes gone) on leaving."""
    server = S3Server(tuple(free_ports(S3_PORTS)), state_dir, "mint", secrets.token_hex(16))
    server.start()
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


def settings(server: S3Server) -> S3Settings:
    return S3Settings(server.endpoint, server.access_key, server.secret_key)


def own_client(server: S3Server, timeout_s: float = 3.0) -> Minio:
    """A client that gives up fast, so a test sees an outage within seconds."""
    return client(settings(server), timeout_s=timeout_s)


def restart(server: S3Server) -> None:
    """Start the killed server again on the same ports and data."""
    server.stop()  # tidies the pid file of the killed process
    server.start()
    server.wait_ready()
