"""S3 through the `minio` SDK: one client factory and the conditional writes MinT relies on.

Works against MinIO or any S3 server; tests run it against a local SeaweedFS S3 gateway.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, cast

import urllib3
from minio import Minio
from minio.error import MinioException, S3Error
from minio.helpers import ObjectWriteResult

from mint import logs
from mint.deadlines import time_left
from mint.domain.errors import Unauthenticated, Unavailable

log = logging.getLogger(__name__)

# What S3 answers when the object (or its bucket) is not there: callers handle these.
MISSING = frozenset({"NoSuchKey", "NotFound", "NoSuchBucket"})
# What S3 answers to a request whose credentials it refuses (not what they may do).
CREDENTIALS_REFUSED = frozenset(
    {"SignatureDoesNotMatch", "InvalidAccessKeyId", "InvalidToken", "ExpiredToken"}
)
PROBE_KEY = ".mint-startup-probe"  # an object nobody writes: asked for to hear why S3 refuses


@dataclass(frozen=True)
class S3Settings:
    endpoint: str  # host:port
    access_key: str
    secret_key: str = field(repr=False)
    secure: bool = False  # HTTPS
    region: str = "us-east-1"
    ca_file: str | None = None  # the CA that signed the server's certificate; None: the system's


def client(
    settings: S3Settings, timeout_s: float = 10.0, retries: int = 2, connections: int = 16
) -> Minio:
    """A client safe to share between threads; `connections`: how many of them it keeps
    open at once (more threads than that would each open and drop connections)."""
    http = _CallerBound(
        timeout_s,
        timeout=urllib3.Timeout(connect=timeout_s, read=timeout_s),
        retries=urllib3.Retry(total=retries, backoff_factor=0.2, status_forcelist=[502, 503, 504]),
        maxsize=connections,
        cert_reqs="CERT_REQUIRED",  # HTTPS only: plain HTTP pools ignore both
        ca_certs=settings.ca_file,
    )
    return Minio(
        settings.endpoint,
        access_key=settings.access_key,
        secret_key=settings.secret_key,
        secure=settings.secure,
        region=settings.region,
        http_client=http,
    )


class _NoTimeLeft(urllib3.exceptions.TimeoutError):
    """The caller's deadline came before a request could be made: not S3's failure."""


class _CallerBound(urllib3.PoolManager):
    """Requests made for a caller with a deadline (mint/deadlines.py) that comes before
    the client's own timeouts would: one try, over by then (a hung server would otherwise
    hold the caller for a timeout per try), so it hears a retryable UNAVAILABLE in time."""

    def __init__(self, timeout_s: float, **pool: Any) -> None:
        super().__init__(**pool)
        self.timeout_s = timeout_s

    def urlopen(  # type: ignore[override]  # as urllib3's own PoolManager.urlopen
        self, method: str, url: str, redirect: bool = True, **kw: Any
    ) -> urllib3.BaseHTTPResponse:
        left = time_left(self.timeout_s)
        if left < self.timeout_s:
            if left <= 0:
                raise _NoTimeLeft("no time left before the caller's deadline")
            kw["timeout"] = urllib3.Timeout(total=left)
            kw["retries"] = urllib3.Retry(total=0)
        return super().urlopen(method, url, redirect=redirect, **kw)


def check_reachable(settings: S3Settings, bucket: str, timeout_s: float) -> None:
    """Raise Unavailable unless S3 answers a question about `bucket` within `timeout_s`,
    asked again every half second until then, and Unauthenticated if it refuses the
    credentials themselves. Any other answer (a missing bucket, a key without rights on
    it) is for the service's own calls to find."""
    s3 = client(settings, timeout_s=timeout_s, retries=0)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with logs.silenced("urllib3", "minio"):
                s3.bucket_exists(bucket)
            return
        except S3Error as exc:
            refused = _credentials_refused(s3, bucket, exc)
            if refused is not None:
                raise Unauthenticated(
                    f"S3 at {settings.endpoint} refused access key {settings.access_key!r} "
                    f"({refused})"
                ) from exc
            return  # it answered: what else it allows is for the service's own calls to find
        except (MinioException, urllib3.exceptions.HTTPError, OSError) as exc:
            if time.monotonic() + 0.5 > deadline:
                reason = getattr(exc, "reason", None) or exc  # urllib3 wraps the cause
                raise Unavailable(
                    f"S3 at {settings.endpoint} did not answer: {str(reason).rsplit(': ', 1)[-1]}"
                ) from exc
        time.sleep(0.5)


def _credentials_refused(s3: Minio, bucket: str, answer: S3Error) -> str | None:
    """S3's code if `answer` refuses the credentials, else None. A refused HEAD has no
    body to say why (minio calls every 403 AccessDenied: a wrong secret, or a key without
    rights on the bucket), so a GET of an object that is not there asks again: its
    answer's body says."""
    code = answer.code
    if code == "AccessDenied":
        try:
            with logs.silenced("urllib3", "minio"):
                s3.get_object(bucket, PROBE_KEY).close()
            return None
        except S3Error as exc:
            code = exc.code
        except (MinioException, urllib3.exceptions.HTTPError, OSError):
            return None  # no second answer: nothing to tell
    return code if code in CREDENTIALS_REFUSED else None


@contextlib.contextmanager
def unavailable_on_failure(action: str) -> Iterator[None]:
    """Turn S3's own failures (server down, timeouts, errors it answers) into the
    retryable `Unavailable`, so no caller needs to know urllib3 or minio types. Answers a
    caller handles (a missing object, a failed precondition) are caught before this."""
    try:
        yield
    except _NoTimeLeft as exc:  # S3 was never asked: say so, not that it is down
        raise Unavailable(
            f"the call's deadline leaves no time for object storage ({action}); retry with "
            "more (a few seconds)"
        ) from exc
    except (MinioException, urllib3.exceptions.HTTPError, OSError) as exc:
        log.warning("S3 failed while %s: %s", action, exc)  # callers only see Unavailable
        raise Unavailable(
            f"object storage is unavailable ({action}: {type(exc).__name__}); retry shortly"
        ) from exc


class PreconditionFailed(Exception):
    """A conditional write lost: the object exists (If-None-Match) or changed (If-Match)."""


def put_if_absent(
    s3: Minio,
    bucket: str,
    key: str,
    data: bytes | bytearray,
    content_type: str,
    verify_md5: bool = False,
) -> str:
    """Write `key` only if no object has that key; return its ETag.

    The SDK's public put_object turns unknown headers into user metadata, so the
    conditional header goes through its internal single-request PUT. tests/infra checks
    that the server honours it, which also catches an SDK change.
    """
    condition = {"If-None-Match": "*"}
    if verify_md5:
        condition["Content-MD5"] = base64.b64encode(hashlib.md5(data).digest()).decode()
    return _conditional_put(s3, bucket, key, data, content_type, condition)


def put_if_match(
    s3: Minio, bucket: str, key: str, data: bytes, content_type: str, etag: str
) -> str:
    """Replace `key` only if its current ETag is `etag` (compare-and-swap); return the new one."""
    return _conditional_put(s3, bucket, key, data, content_type, {"If-Match": f'"{etag}"'})


def _conditional_put(
    s3: Minio,
    bucket: str,
    key: str,
    data: bytes | bytearray,
    content_type: str,
    condition: dict[str, str],
) -> str:
    with unavailable_on_failure(f"writing s3://{bucket}/{key}"):
        try:
            result: ObjectWriteResult = s3._put_object(
                bucket,
                key,
                cast(bytes, data),  # a bytearray goes as it is (no copy): urllib3 takes both
                headers={"Content-Type": content_type, **condition},
            )
        except S3Error as exc:
            if exc.code == "PreconditionFailed":
                raise PreconditionFailed(f"s3://{bucket}/{key}: {condition}") from exc
            raise
    return str(result.etag)


def ensure_bucket(s3: Minio, bucket: str) -> None:
    """Create `bucket` unless it exists; processes starting together (members of a group,
    replicas) may each find it missing, and the one that loses the race to create it
    finds it there."""
    with unavailable_on_failure(f"creating bucket {bucket}"):
        if s3.bucket_exists(bucket):
            return
        try:
            s3.make_bucket(bucket)
        except S3Error as exc:
            if exc.code != "BucketAlreadyOwnedByYou":
                raise
