"""Blobs in S3 (MinIO or any S3) through the minio SDK: sealed per adapter (see
mint/blobs/port.py), the wrapped data keys beside them under `keys/`.

Crypto-shredding relies on a deleted or replaced object being gone: the bucket must not
keep old versions (no S3 versioning, or a lifecycle rule expiring noncurrent versions at
once), else a destroyed data key survives as an old version."""

from __future__ import annotations

import io
from collections.abc import Iterator

from minio import Minio
from minio.error import S3Error

from mint.blobs.sealed import Listed, SealedBlobStore
from mint.blobs.sealing import Kek

from .s3 import MISSING, PreconditionFailed, ensure_bucket, put_if_absent, unavailable_on_failure

OCTETS = "application/octet-stream"


class S3RawObjects:
    def __init__(self, s3: Minio, bucket: str) -> None:
        self.s3, self.bucket = s3, bucket

    def create(self, key: str, data: bytes | bytearray) -> bool:
        # One PUT is atomic in S3: readers see the whole object or none. Content-MD5 makes
        # the server reject bytes damaged on the way.
        try:
            put_if_absent(self.s3, self.bucket, key, data, OCTETS, verify_md5=True)
        except PreconditionFailed:
            return False
        return True

    def replace(self, key: str, data: bytes) -> None:
        with unavailable_on_failure(f"writing s3://{self.bucket}/{key}"):
            self.s3.put_object(self.bucket, key, io.BytesIO(data), len(data), OCTETS)

    def read(self, key: str) -> bytes | None:
        with unavailable_on_failure(f"reading s3://{self.bucket}/{key}"):
            try:
                response = self.s3.get_object(self.bucket, key)
            except S3Error as exc:
                if exc.code in MISSING:
                    return None
                raise
            try:
                return bytes(response.read())
            finally:
                response.close()
                response.release_conn()

    def exists(self, key: str) -> bool:
        with unavailable_on_failure(f"looking up s3://{self.bucket}/{key}"):
            try:
                self.s3.stat_object(self.bucket, key)
            except S3Error as exc:
                if exc.code in MISSING:
                    return False
                raise
        return True

    def delete(self, key: str) -> None:
        with unavailable_on_failure(f"deleting s3://{self.bucket}/{key}"):
            self.s3.remove_object(self.bucket, key)  # S3 answers a missing key with success

    def keys_under(self, prefix: str) -> list[str]:
        with unavailable_on_failure(f"listing s3://{self.bucket}/{prefix}"):
            try:
                listed = self.s3.list_objects(self.bucket, prefix=prefix, recursive=True)
                return [str(o.object_name) for o in listed]
            except S3Error as exc:
                if exc.code in MISSING:
                    return []
                raise

    def listed_under(self, prefix: str) -> Iterator[Listed]:
        with unavailable_on_failure(f"listing s3://{self.bucket}/{prefix}"):
            for o in self.s3.list_objects(self.bucket, prefix=prefix, recursive=True):
                if o.last_modified is not None:
                    yield Listed(str(o.object_name), int(o.size or 0), o.last_modified)


class S3BlobStore(SealedBlobStore):
    def __init__(self, s3: Minio, bucket: str, kek: Kek) -> None:
        ensure_bucket(s3, bucket)
        super().__init__(S3RawObjects(s3, bucket), kek)
        self.s3, self.bucket = s3, bucket
