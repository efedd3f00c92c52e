"""Blobs in S3 (MinIO or any S3) through the minio SDK."""

from __future__ import annotations

import contextlib

from minio import Minio
from minio.error import S3Error

from mint.blobs.port import BlobRef, BlobStore, blob_key, checked_ref, verified
from mint.domain.errors import NotFound

from .s3 import MISSING, PreconditionFailed, ensure_bucket, put_if_absent, unavailable_on_failure


class S3BlobStore(BlobStore):
    def __init__(self, s3: Minio, bucket: str) -> None:
        self.s3, self.bucket = s3, bucket
        ensure_bucket(s3, bucket)

    def put(self, data: bytes, expected_sha256: str | None = None) -> BlobRef:
        ref = checked_ref(data, expected_sha256)
        # One PUT is atomic in S3: readers see the whole object or none. Content-MD5 makes
        # the server reject bytes damaged on the way. A blob already there is the same bytes.
        with contextlib.suppress(PreconditionFailed):
            put_if_absent(
                self.s3,
                self.bucket,
                blob_key(ref.sha256),
                data,
                "application/octet-stream",
                verify_md5=True,
            )
        return ref

    def get(self, sha256: str) -> bytes:
        with unavailable_on_failure(f"reading blob {sha256}"):
            try:
                response = self.s3.get_object(self.bucket, blob_key(sha256))
            except S3Error as exc:
                if exc.code in MISSING:
                    raise NotFound(f"no blob {sha256}") from None
                raise
            try:
                data = response.read()
            finally:
                response.close()
                response.release_conn()
        return verified(sha256, data)

    def exists(self, sha256: str) -> bool:
        with unavailable_on_failure(f"looking up blob {sha256}"):
            try:
                self.s3.stat_object(self.bucket, blob_key(sha256))
            except S3Error as exc:
                if exc.code in MISSING:
                    return False
                raise
        return True
