"""The `BlobStore` port's one implementation, over any store of named objects: blobs
sealed with a data key per adapter, the data keys wrapped by the KEK (see port.py)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from mint.domain.errors import DataLoss, Erased, NotFound

from . import sealing
from .port import (
    BLOBS_PREFIX,
    ERASURES_PREFIX,
    MARKS_PREFIX,
    BlobId,
    BlobRef,
    BlobStore,
    PendingErasure,
    StoredBlob,
    adapter_blobs_prefix,
    blob_key,
    blob_of,
    checked_ref,
    data_key_key,
    erasure_key,
    mark_key,
    verified,
)

# What stands where an erased adapter's wrapped data key was: a key can no longer be made
# for it (a publish racing the erasure fails instead of sealing with a fresh key).
DESTROYED = b"mint-destroyed-key-v1\n"


@dataclass(frozen=True)
class Listed:
    key: str
    size: int
    modified: datetime  # when it was last written (timezone-aware)


class RawObjects(Protocol):
    """Named byte objects (an S3 bucket, a local folder); each write is atomic."""

    def create(self, key: str, data: bytes | bytearray) -> bool:
        """Write `key` only if there is no such object; False if there was one."""

    def replace(self, key: str, data: bytes) -> None:
        """Write `key` whatever is there."""

    def read(self, key: str) -> bytes | None:
        """The object's bytes, or None if there is none."""

    def exists(self, key: str) -> bool:
        """True if there is such an object (without reading it)."""

    def delete(self, key: str) -> None:
        """Remove `key` (nothing if it is not there)."""

    def keys_under(self, prefix: str) -> list[str]:
        """Every key starting with `prefix`."""

    def listed_under(self, prefix: str) -> Iterator[Listed]:
        """Every object under `prefix` with its size and time, read as it goes."""


class SealedBlobStore(BlobStore):
    def __init__(self, objects: RawObjects, kek: sealing.Kek) -> None:
        self.objects, self.kek = objects, kek

    def put(self, adapter_id: str, data: bytes, expected_sha256: str | None = None) -> BlobRef:
        ref = checked_ref(data, expected_sha256)
        key = blob_key(adapter_id, ref.sha256)
        data_key = self._data_key(adapter_id, create=True)
        if data_key is None:  # made, then gone: only an erasure's tombstone replaces it
            raise Erased(f"adapter {adapter_id} was erased while its blob was stored")
        sealed = sealing.seal(data_key, adapter_id, ref.sha256, data)
        self.objects.create(key, sealed)  # already there: the same bytes, sealed before
        return ref

    def get(self, adapter_id: str, sha256: str) -> bytes:
        key = blob_key(adapter_id, sha256)
        data_key = self._data_key(adapter_id, create=False)
        sealed = self.objects.read(key)
        if sealed is None:
            raise NotFound(f"no blob {sha256} of adapter {adapter_id}")
        if data_key is None:
            raise DataLoss(f"adapter {adapter_id} has blob {sha256} but no data key to open it")
        return verified(sha256, sealing.open_sealed(data_key, adapter_id, sha256, sealed))

    def exists(self, adapter_id: str, sha256: str) -> bool:
        return self.objects.exists(blob_key(adapter_id, sha256))

    def stored(self) -> Iterator[StoredBlob]:
        for listed in self.objects.listed_under(BLOBS_PREFIX):
            blob = blob_of(listed.key)
            if blob is not None:
                yield StoredBlob(blob, listed.size, listed.modified)

    def delete(self, adapter_id: str, sha256: str) -> None:
        self.objects.delete(blob_key(adapter_id, sha256))

    def mark(self, adapter_id: str, sha256: str) -> None:
        self.objects.create(mark_key(adapter_id, sha256), b"")  # marked already: fine

    def marked(self, adapter_id: str, sha256: str) -> bool:
        return self.objects.exists(mark_key(adapter_id, sha256))

    def unmark(self, adapter_id: str, sha256: str) -> None:
        self.objects.delete(mark_key(adapter_id, sha256))

    def marks(self) -> Iterator[BlobId]:
        for key in self.objects.keys_under(MARKS_PREFIX):
            blob = blob_of(key)
            if blob is not None:
                yield blob

    def begin_erasure(self, adapter_id: str, stream: str) -> None:
        note = {"stream": stream, "began_at": time.time()}
        self.objects.replace(erasure_key(adapter_id), json.dumps(note).encode())

    def erase(self, adapter_id: str) -> None:
        # The key first: from then on no copy of a blob opens, whatever is left below.
        self.objects.replace(data_key_key(adapter_id), DESTROYED)
        for key in self.objects.keys_under(adapter_blobs_prefix(adapter_id)):
            self.objects.delete(key)
        self.objects.delete(erasure_key(adapter_id))

    def abandon_erasure(self, adapter_id: str) -> None:
        self.objects.delete(erasure_key(adapter_id))

    def pending_erasures(self) -> list[PendingErasure]:
        pending = []
        for key in self.objects.keys_under(ERASURES_PREFIX):
            note = self.objects.read(key)
            if note is None:
                continue  # finished meanwhile
            try:
                doc = json.loads(note)
                stream, began_at = str(doc["stream"]), float(doc["began_at"])
            except (ValueError, KeyError, TypeError):
                stream, began_at = "", 0.0  # unreadable: only an erase can finish it
            pending.append(PendingErasure(key.removeprefix(ERASURES_PREFIX), stream, began_at))
        return pending

    def _data_key(self, adapter_id: str, create: bool) -> bytes | None:
        """The adapter's data key, unwrapped; made on its first blob when `create`."""
        key = data_key_key(adapter_id)
        wrapped = self.objects.read(key)
        if wrapped is None and create:
            # A concurrent upload may make it first: then its key is the one, read back.
            self.objects.create(key, self.kek.wrap(adapter_id, sealing.new_data_key()))
            wrapped = self.objects.read(key)
        if wrapped is None:
            return None
        if wrapped == DESTROYED:
            raise Erased(f"adapter {adapter_id} was erased: its data key is destroyed")
        return self.kek.unwrap(adapter_id, wrapped)
