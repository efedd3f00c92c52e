"""Writes planned objects to S3, idempotently: an object already holding the same bytes
is left alone, so redelivered events and replays change nothing."""

from __future__ import annotations

import hashlib
import io
import json

from minio import Minio
from minio.commonconfig import CopySource
from minio.error import S3Error

from mint.backends.s3 import ensure_bucket
from mint.blobs.port import blob_key

from .planner import CopyBlob, Operation, PutJson


class S3Sink:
    def __init__(self, s3: Minio, bucket: str, blobs_bucket: str, prefix: str = "") -> None:
        self.s3, self.bucket, self.blobs_bucket, self.prefix = s3, bucket, blobs_bucket, prefix
        ensure_bucket(s3, bucket)
        self.written = 0  # objects actually written (not skipped), for metrics and tests

    def apply(self, operations: list[Operation]) -> None:
        """In order: a later operation (a pointer) is written only after earlier ones."""
        for op in operations:
            if isinstance(op, PutJson):
                self._put(op)
            else:
                self._copy(op)

    def _stat_etag_size(self, key: str) -> tuple[str, int] | None:
        try:
            stat = self.s3.stat_object(self.bucket, self.prefix + key)
        except S3Error as exc:
            if exc.code in {"NoSuchKey", "NotFound"}:
                return None
            raise
        return str(stat.etag), int(stat.size or 0)

    def _put(self, op: PutJson) -> None:
        if op.version is not None:
            if self._stored_version(op.key) >= op.version:
                return  # the object already reflects this event or a later one
        else:
            existing = self._stat_etag_size(op.key)
            if existing is not None and existing[0] == hashlib.md5(op.body).hexdigest():
                return
        self.s3.put_object(
            self.bucket,
            self.prefix + op.key,
            io.BytesIO(op.body),
            len(op.body),
            content_type="application/json",
        )
        self.written += 1

    def _stored_version(self, key: str) -> int:
        try:
            response = self.s3.get_object(self.bucket, self.prefix + key)
        except S3Error as exc:
            if exc.code in {"NoSuchKey", "NotFound"}:
                return 0
            raise
        try:
            return int(json.loads(response.read()).get("stream_version", 0))
        finally:
            response.close()
            response.release_conn()

    def _copy(self, op: CopyBlob) -> None:
        existing = self._stat_etag_size(op.key)
        if existing is not None and existing[1] == op.size:
            return  # revision files are immutable: same key, same size, same content
        self.s3.copy_object(
            self.bucket, self.prefix + op.key, CopySource(self.blobs_bucket, blob_key(op.sha256))
        )
        self.written += 1
