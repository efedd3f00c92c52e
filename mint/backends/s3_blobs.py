"""Blobs in S3 (MinIO or any S3) through the minio SDK."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from minio import Minio
from minio.error import S3Error

from mint.blobs.port import (
    BLOBS_PREFIX,
    MARKS_PREFIX,
    BlobRef,
    BlobStore,
    StoredBlob,
    blob_key,
    checked_ref,
    digest_of,
    mark_key,
    verified,
)
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
        return self._there(blob_key(sha256), f"looking up blob {sha256}")

    def stored(self) -> Iterator[StoredBlob]:
        with unavailable_on_failure(f"listing the blobs of {self.bucket}"):
            for o in self.s3.list_objects(self.bucket, prefix=BLOBS_PREFIX, recursive=True):
                digest = digest_of(str(o.object_name))
                if digest is not None and o.last_modified is not None:
                    yield StoredBlob(digest, int(o.size or 0), o.last_modified)

    def delete(self, sha256: str) -> None:
        with unavailable_on_failure(f"deleting blob {sha256}"):
            self.s3.remove_object(self.bucket, blob_key(sha256))  # absent: S3 says 204 too

    def mark(self, sha256: str) -> None:
        with contextlib.suppress(PreconditionFailed):  # marked already
            put_if_absent(self.s3, self.bucket, mark_key(sha256), b"", "text/plain")

    def marked(self, sha256: str) -> bool:
        return self._there(mark_key(sha256), f"looking up the collection mark of {sha256}")

    def unmark(self, sha256: str) -> None:
        with unavailable_on_failure(f"removing the collection mark of {sha256}"):
            self.s3.remove_object(self.bucket, mark_key(sha256))

    def marks(self) -> Iterator[str]:
        with unavailable_on_failure(f"listing the collection marks of {self.bucket}"):
            for o in self.s3.list_objects(self.bucket, prefix=MARKS_PREFIX, recursive=True):
                digest = digest_of(str(o.object_name))
                if digest is not None:
                    yield digest

    def _there(self, key: str, action: str) -> bool:
        with unavailable_on_failure(action):
            try:
                self.s3.stat_object(self.bucket, key)
            except S3Error as exc:
                if exc.code in MISSING:
                    return False
                raise
        return True
