"""Start-up checks of MinT's services: before a service builds anything on Kafka or S3
(or loads its base model) it checks that they are there, and that its local files
(tokens, TLS certificate and key, data directory) are usable, so that a wrong address, a
server that is down, refused credentials or a bad file is one line on stderr naming it
and what to do, and a non-zero exit: no traceback, no minutes of a library's retries.

Each raises SystemExit with that line (Python prints it, exit status 1), like a missing
setting (`mint.settings.load`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from mint.backends import kafka as kafka_backend
from mint.backends import s3 as s3_backend
from mint.domain.errors import FailedPrecondition, Unauthenticated, Unavailable
from mint.rpc.tls import BadTlsFile, TlsFiles
from mint.settings import KafkaOptions, S3Options, option

if TYPE_CHECKING:
    from mint.rpc.auth import TokenTable


def require_kafka(config: KafkaOptions, timeout_s: float) -> None:
    """Exit unless Kafka's brokers answer within `timeout_s`."""
    try:
        kafka_backend.check_reachable(config.kafka(), timeout_s)
    except Unavailable as exc:
        raise SystemExit(
            f"cannot reach Kafka within {timeout_s:g} s ({exc}): check "
            f"{option('kafka_bootstrap')} and that the brokers are up (and the "
            "kafka_security_protocol settings, if they use TLS or SASL)"
        ) from None


def require_s3(config: S3Options, bucket: str, timeout_s: float) -> None:
    """Exit unless S3 answers within `timeout_s` and takes the credentials."""
    try:
        s3_backend.check_reachable(config.s3(), bucket, timeout_s)
    except Unavailable as exc:
        scheme = "https" if config.s3_secure else "http"
        raise SystemExit(
            f"cannot reach S3 within {timeout_s:g} s over {scheme} ({exc}): check "
            f"{option('s3_endpoint')} (and --s3-secure) and that the server is up"
        ) from None
    except Unauthenticated as exc:
        raise SystemExit(
            f"{exc}: the credentials were refused; check {option('s3_access_key')} and "
            f"{option('s3_secret_key')}"
        ) from None


def load_tokens(path: Path) -> TokenTable:
    """The tokens table in `path`; exit saying what is wrong with the file if it is bad."""
    from mint.rpc.auth import TokenTable  # the servers' (the controller takes no tokens)

    try:
        return TokenTable.from_file(path)
    except ValueError as exc:
        raise SystemExit(f"{exc}; fix {option('tokens_file')}") from None


def require_tls(files: TlsFiles | None) -> None:
    """Exit unless the server's TLS files (None: plaintext) are PEM of their kinds and the
    key is the certificate's."""
    if files is None:
        return
    try:
        files.check()
    except BadTlsFile as exc:
        raise SystemExit(f"{exc}; fix {option(exc.setting)}") from None


def require_data_dir(path: Path) -> None:
    """Make `path` unless it exists; exit unless it is then a directory this process may
    write in."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SystemExit(
            f"cannot make data directory {path}: {exc.strerror}; fix {option('data_dir')}"
        ) from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise SystemExit(
            f"data directory {path} is not writable by this process; fix "
            f"{option('data_dir')} or the directory's permissions"
        )


def require_base_dir(path: str | None) -> None:
    """Exit unless `path` (None: the built-in base) holds a base model and its tokenizer."""
    if path is None:
        return
    from mint.models.base_dir import check_base_dir  # the serving extra: only nodes ask

    try:
        check_base_dir(path)
    except FailedPrecondition as exc:
        raise SystemExit(f"{exc}; fix {option('base_dir')}") from None
