"""Start-up checks of MinT's services: before a service builds anything on Kafka or S3
(or loads its base model) it checks that they are there, so that a wrong address, a
server that is down or a missing file is one line on stderr naming it and what to do,
and a non-zero exit: no traceback, no minutes of a library's retries.

Each raises SystemExit with that line (Python prints it, exit status 1), like a missing
setting (`mint.settings.load`)."""

from __future__ import annotations

from mint.backends import kafka as kafka_backend
from mint.backends import s3 as s3_backend
from mint.domain.errors import FailedPrecondition, Unavailable
from mint.settings import KafkaOptions, S3Options, option


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
    """Exit unless S3 answers within `timeout_s`."""
    try:
        s3_backend.check_reachable(config.s3(), bucket, timeout_s)
    except Unavailable as exc:
        scheme = "https" if config.s3_secure else "http"
        raise SystemExit(
            f"cannot reach S3 within {timeout_s:g} s over {scheme} ({exc}): check "
            f"{option('s3_endpoint')} (and --s3-secure) and that the server is up"
        ) from None


def require_base_dir(path: str | None) -> None:
    """Exit unless `path` (None: the built-in base) holds a base model and its tokenizer."""
    if path is None:
        return
    from mint.models.base_dir import check_base_dir  # the serving extra: only nodes ask

    try:
        check_base_dir(path)
    except FailedPrecondition as exc:
        raise SystemExit(f"{exc}; fix {option('base_dir')}") from None
