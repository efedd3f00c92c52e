"""Plain reads of projection objects from S3 (the serving side's `ObjectSource`)."""

from __future__ import annotations

from minio import Minio
from minio.error import S3Error

from mint.serving.catalog import Digest

MISSING = {"NoSuchKey", "NotFound", "NoSuchBucket"}
CHUNK = 256 * 1024


class S3Objects:
    def __init__(self, s3: Minio, bucket: str, prefix: str = "") -> None:
        self.s3, self.bucket, self.prefix = s3, bucket, prefix

    def get(self, key: str, digest: Digest | None = None) -> bytes | None:
        try:
            response = self.s3.get_object(self.bucket, self.prefix + key)
        except S3Error as exc:
            if exc.code in MISSING:
                return None
            raise
        try:
            if digest is None:
                return bytes(response.read())
            chunks = []  # hash while the rest is still arriving
            for chunk in response.stream(CHUNK):
                digest.update(chunk)
                chunks.append(chunk)
            return b"".join(chunks)
        finally:
            response.close()
            response.release_conn()
