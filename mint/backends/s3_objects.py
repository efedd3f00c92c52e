"""Plain reads of projection objects from S3 (the serving side's `ObjectSource`, the
registry's `ListedObjects`)."""

from __future__ import annotations

import itertools

from minio import Minio
from minio.error import S3Error

from .s3 import MISSING, unavailable_on_failure


class S3Objects:
    def __init__(self, s3: Minio, bucket: str, prefix: str = "") -> None:
        self.s3, self.bucket, self.prefix = s3, bucket, prefix

    def get(self, key: str) -> bytes | None:
        with unavailable_on_failure(f"reading s3://{self.bucket}/{self.prefix}{key}"):
            try:
                response = self.s3.get_object(self.bucket, self.prefix + key)
            except S3Error as exc:
                if exc.code in MISSING:
                    return None
                raise
            try:
                # One read: measured twice as fast as streaming chunks through urllib3.
                return bytes(response.read())
            finally:
                response.close()
                response.release_conn()

    def keys_after(self, prefix: str, start_after: str, limit: int) -> list[str]:
        """Up to `limit` keys under `prefix` that sort after `start_after` ("": from the
        first), in S3's byte order; one listing request for up to 1,000.

        The SDK's public list_objects asks for 1,000 keys whatever the caller takes (a
        page of 100 then costs 8x as long), so this goes through its internal lister,
        which takes `max_keys`; the catalog tests against the real server catch an SDK
        change. No bucket yet means nothing projected yet: no keys."""
        with unavailable_on_failure(f"listing s3://{self.bucket}/{self.prefix}{prefix}"):
            listed = self.s3._list_objects(
                self.bucket,
                prefix=self.prefix + prefix,
                start_after=self.prefix + start_after if start_after else None,
                max_keys=min(limit, 1000),
                encoding_type="url",  # keys come back decoded, as list_objects gives them
            )
            try:
                return [
                    str(o.object_name)[len(self.prefix) :] for o in itertools.islice(listed, limit)
                ]
            except S3Error as exc:
                if exc.code in MISSING:
                    return []
                raise
