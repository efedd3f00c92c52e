"""Writes planned objects to S3, idempotently: an object already holding the same bytes
is left alone, so redelivered events and replays change nothing, and an object whose
bytes differ (damaged, or written by older code) is written again.

A batch of events is written stage by stage (revision files, then manifests, then the
mutable objects), every write of a stage landed before the next stage starts, and within
a stage up to `concurrency` writes at a time, so that S3's latencies overlap (objects of
one stage never depend on each other; the S3 client's CPU per request is then the bound).
Of several writes to one key in a batch only the last is made (a catch-up moves a pointer
many times; only the newest survives), still in its stage, so still after the revision it
points to.

Mutable objects (pointers, catalog, evaluations) are replaced by compare-and-swap: read
the stored version and its ETag, then write only if the ETag is still the one read
(If-Match), or only if there is still no object (If-None-Match). A zombie projector, or
two members of the group during a rebalance, can therefore never put an older pointer
over a newer one: the loser of a race reads again and finds the newer version.

S3 failures surface as `Unavailable` (retryable); the runner backs off and retries.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait

from minio import Minio
from minio.error import S3Error

from mint.backends.s3 import (
    MISSING,
    PreconditionFailed,
    ensure_bucket,
    put_if_absent,
    put_if_match,
    unavailable_on_failure,
)
from mint.backends.s3_blobs import S3RawObjects
from mint.blobs.sealed import SealedBlobStore
from mint.blobs.sealing import Kek
from mint.domain.errors import DataLoss, Erased, NotFound, Unavailable
from mint.projection import CopyBlob, DeletePrefix, Operation, PutJson, Stage

JSON = "application/json"
# Each lost race means another writer stored a newer object meanwhile; a handful of
# rounds settles any real contention, more would mean a fault worth surfacing.
MAX_SWAP_ROUNDS = 20
DEFAULT_CONCURRENCY = 16


class S3Sink:
    def __init__(
        self,
        s3: Minio,
        bucket: str,
        blobs_bucket: str,
        prefix: str = "",
        concurrency: int = DEFAULT_CONCURRENCY,
        *,
        kek: Kek,
    ) -> None:
        """`kek` opens the adapters' data keys: revision files are the blobs, opened."""
        if concurrency < 1:
            raise ValueError(
                f"concurrency must be at least 1 (1: one write at a time), not {concurrency}"
            )
        self.s3, self.bucket, self.blobs_bucket, self.prefix = s3, bucket, blobs_bucket, prefix
        self.blobs = SealedBlobStore(S3RawObjects(s3, blobs_bucket), kek)
        ensure_bucket(s3, bucket)
        self.written = 0  # objects actually written (not skipped), for metrics and tests
        self._count_lock = threading.Lock()
        self._pool = (
            ThreadPoolExecutor(concurrency, thread_name_prefix="s3-sink")
            if concurrency > 1
            else None
        )

    def apply(self, operations: Sequence[Operation]) -> None:
        """Write the operations of a batch of events, planned in log order: stage by stage,
        of several writes to one key only the last."""
        for stage in Stage:
            latest = {op.key: op for op in operations if op.stage == stage}
            self._write_all(list(latest.values()))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()

    def _write_all(self, operations: list[Operation]) -> None:
        """Every write landed (or none started after a failure) before this returns: the
        next stage, a retry or an offset commit never overtakes a write still in flight."""
        if self._pool is None or len(operations) < 2:
            for op in operations:
                self._write(op)
            return
        futures = [self._pool.submit(self._write, op) for op in operations]
        _, pending = wait(futures, return_when=FIRST_EXCEPTION)
        for future in pending:
            future.cancel()  # S3 is failing: give up the batch at once, the runner retries
        wait(futures)
        for future in futures:
            if not future.cancelled():
                future.result()  # the first failure, if any

    def _write(self, op: Operation) -> None:
        with unavailable_on_failure(f"projecting s3://{self.bucket}/{self.prefix}{op.key}"):
            if isinstance(op, CopyBlob):
                self._copy(op)
            elif isinstance(op, DeletePrefix):
                self._delete_under(op)
            elif op.version is None:
                self._put(op)
            else:
                self._swap(op, op.version)

    def _landed(self, key: str) -> None:
        """An object was written (not skipped as already there)."""
        with self._count_lock:
            self.written += 1

    def _etag(self, bucket: str, key: str) -> str | None:
        try:
            return str(self.s3.stat_object(bucket, key).etag)
        except S3Error as exc:
            if exc.code in MISSING:
                return None
            raise

    def _created(self, key: str, body: bytes, content_type: str = JSON) -> bool:
        """Create `key` holding `body` if there is no such object (one round trip)."""
        try:
            put_if_absent(self.s3, self.bucket, key, body, content_type)
        except PreconditionFailed:
            return False
        return True

    def _put(self, op: PutJson) -> None:
        """Immutable JSON (manifests, configs, bases)."""
        self._put_immutable(op.key, op.body, JSON)

    def _put_immutable(self, key: str, body: bytes, content_type: str) -> None:
        """New but in a replay: created (one round trip; a replay sends the body to be
        refused), else compared by ETag (the ETag of a single-request PUT is the MD5 of its
        bytes, so equal ETags mean equal content) and replaced if it differs (damaged, or
        written by older code as a multipart upload, whose ETag is no MD5). Every write is
        a single request, so the next replay finds the MD5."""
        full = self.prefix + key
        if not self._created(full, body, content_type):
            etag = self._etag(self.bucket, full)
            if etag == hashlib.md5(body).hexdigest():
                return
            try:
                if etag is None:  # deleted since
                    put_if_absent(self.s3, self.bucket, full, body, content_type)
                else:
                    put_if_match(self.s3, self.bucket, full, body, content_type, etag)
            except PreconditionFailed as exc:
                raise Unavailable(f"s3://{self.bucket}/{full} changed while being written") from exc
        self._landed(key)

    def _swap(self, op: PutJson, version: int) -> None:
        """Mutable JSON: write unless the stored object reflects a later version, or this
        very version with the same bytes; compare-and-swap so no write goes backwards."""
        key = self.prefix + op.key
        if op.new and self._created(key, op.body):
            self._landed(op.key)
            return
        for _ in range(MAX_SWAP_ROUNDS):
            stored = self._read(key)
            if stored is not None:
                body, etag = stored
                if _version(body) > version or body == op.body:
                    return
            try:
                if stored is None:
                    put_if_absent(self.s3, self.bucket, key, op.body, JSON)
                else:
                    put_if_match(self.s3, self.bucket, key, op.body, JSON, etag)
            except PreconditionFailed:
                continue  # another writer got there first: look at what it wrote
            self._landed(op.key)
            return
        raise Unavailable(f"s3://{self.bucket}/{key} kept changing while being written; retry")

    def _read(self, key: str) -> tuple[bytes, str] | None:
        """The object's bytes and ETag, or None if there is none."""
        try:
            response = self.s3.get_object(self.bucket, key)
        except S3Error as exc:
            if exc.code in MISSING:
                return None
            raise
        try:
            return bytes(response.read()), str(response.headers.get("ETag", "")).strip('"')
        finally:
            response.close()
            response.release_conn()

    def _copy(self, op: CopyBlob) -> None:
        """Revision files are the registry's blobs, opened (the projection is what nodes
        and PEFT read), written as immutable objects are."""
        try:
            data = self.blobs.get(op.adapter_id, op.sha256)
        except Erased:
            return  # erased later in the log: its erasure deletes the folder
        except (NotFound, DataLoss) as exc:  # as a failed copy was: retried, `degraded`
            raise Unavailable(f"cannot project {op.key}: {exc}") from exc
        self._put_immutable(op.key, data, "application/octet-stream")

    def _delete_under(self, op: DeletePrefix) -> None:
        """An erased adapter's objects; deleting what is already gone changes nothing."""
        listed = self.s3.list_objects(self.bucket, prefix=self.prefix + op.key, recursive=True)
        names = [str(o.object_name) for o in listed]
        for name in names:
            self.s3.remove_object(self.bucket, name)
        if names:
            self._landed(op.key)


def _version(body: bytes) -> int:
    """The stream version a stored object reflects; 0 if it is not ours or unreadable
    (then it is replaced)."""
    try:
        doc = json.loads(body)
        return int(doc.get("stream_version", 0)) if isinstance(doc, dict) else 0
    except (ValueError, TypeError):
        return 0
