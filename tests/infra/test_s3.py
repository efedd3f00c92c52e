"""The real S3 server, through the minio SDK, does what MinT's blob store relies on."""

from __future__ import annotations

import io
from typing import Any

import pytest
from minio import Minio
from minio.error import S3Error

from mint.backends.s3 import (
    PreconditionFailed,
    S3Settings,
    client,
    ensure_bucket,
    put_if_absent,
    put_if_match,
)
from tests.infra.smoke import s3_round_trip


@pytest.fixture
def bucket(s3: Minio, unique: str) -> str:
    ensure_bucket(s3, unique)
    return unique


def test_round_trip(s3_settings: S3Settings) -> None:
    assert s3_round_trip(s3_settings) == b"hello"


def test_put_get_stat_list_remove_with_metadata(s3: Minio, bucket: str) -> None:
    data = b"\x00weights\xff" * 100
    s3.put_object(
        bucket,
        "blobs/sha256/ab/abcd",
        io.BytesIO(data),
        len(data),
        content_type="application/octet-stream",
        metadata={"sha256": "abcd"},
    )
    s3.put_object(bucket, "blobs/sha256/cd/cdef", io.BytesIO(b"x"), 1)
    stat = s3.stat_object(bucket, "blobs/sha256/ab/abcd")
    assert stat.size == len(data)
    assert stat.metadata is not None
    assert stat.metadata["x-amz-meta-sha256"] == "abcd"
    assert s3.get_object(bucket, "blobs/sha256/ab/abcd").read() == data
    listed = sorted(o.object_name for o in s3.list_objects(bucket, "blobs/", recursive=True))
    assert listed == ["blobs/sha256/ab/abcd", "blobs/sha256/cd/cdef"]
    s3.remove_object(bucket, "blobs/sha256/ab/abcd")
    with pytest.raises(S3Error) as missing:
        s3.stat_object(bucket, "blobs/sha256/ab/abcd")
    assert missing.value.code == "NoSuchKey"


def test_put_if_absent_refuses_to_overwrite(s3: Minio, bucket: str) -> None:
    put_if_absent(s3, bucket, "pointer.json", b"first", "application/json")
    with pytest.raises(PreconditionFailed):
        put_if_absent(s3, bucket, "pointer.json", b"second", "application/json")
    assert s3.get_object(bucket, "pointer.json").read() == b"first"


def test_put_if_match_is_compare_and_swap(s3: Minio, bucket: str) -> None:
    etag = put_if_absent(s3, bucket, "channel.json", b"rev 1", "application/json")
    newer = put_if_match(s3, bucket, "channel.json", b"rev 2", "application/json", etag)
    with pytest.raises(PreconditionFailed):
        put_if_match(s3, bucket, "channel.json", b"rev 3", "application/json", etag)  # stale
    assert newer != etag
    assert s3.get_object(bucket, "channel.json").read() == b"rev 2"


def test_wrong_secret_is_rejected(s3_settings: S3Settings) -> None:
    wrong = S3Settings(s3_settings.endpoint, s3_settings.access_key, "not-the-secret")
    with pytest.raises(S3Error) as denied:
        client(wrong).list_buckets()
    assert denied.value.code in {"SignatureDoesNotMatch", "InvalidAccessKeyId", "AccessDenied"}


def test_many_buckets_do_not_exhaust_the_servers_volumes(s3: Minio, unique: str) -> None:
    """Each bucket takes several SeaweedFS volumes; the local server must allow many
    (its default cap follows free disk and ran out after a few dozen buckets)."""
    for i in range(40):
        bucket = f"{unique}-{i}"
        ensure_bucket(s3, bucket)
        s3.put_object(bucket, "x", io.BytesIO(b"x"), 1)
    assert s3.get_object(f"{unique}-39", "x").read() == b"x"


class _Late:
    """The S3 client, but a bucket it is asked about is created by someone else just after
    the answer: two processes starting together, both finding it missing."""

    def __init__(self, s3: Minio) -> None:
        self._s3 = s3

    def __getattr__(self, name: str) -> Any:
        return getattr(self._s3, name)

    def bucket_exists(self, bucket: str) -> bool:
        found = bool(self._s3.bucket_exists(bucket))
        if not found:
            self._s3.make_bucket(bucket)
        return found


def test_ensure_bucket_losing_the_race_to_create_it_finds_it_there(s3: Minio, unique: str) -> None:
    ensure_bucket(_Late(s3), unique)  # type: ignore[arg-type]
    assert s3.bucket_exists(unique)
