"""The `BlobStore` port: adapter weights, sealed per adapter, content-addressed within it.

Contract (tests/contract/test_blob_store.py runs it against each back end):
1. `put` stores an adapter's bytes once however often uploaded, under
   `blobs/<adapter id>/sha256/<2 hex>/<64 hex>`, sealed with that adapter's data key
   (mint/blobs/sealing.py), whose wrapped form is the one object `keys/<adapter id>`;
   two adapters uploading the same bytes get two blobs, so erasing one leaves the other;
2. a blob is visible only whole and only after its sha256 was checked; a caller's
   expected sha256 that does not match stores nothing;
3. `get` opens and re-checks the sha256, and raises DataLoss if the stored bytes were
   altered, `Erased` once the adapter's data key was destroyed;
4. `erase` destroys the data key (a tombstone in its place, so no new key is ever made
   for that adapter), then deletes the adapter's blobs; it is idempotent, and an erasure
   begun (`begin_erasure`) stays listed by `pending_erasures` until it is finished
   (`erase`) or dropped (`abandon_erasure`), so a crash in between is finished later;
5. `stored` lists every blob (adapter id, sha256, size, when it was last written);
   `delete` removes one (absent is fine);
6. a mark (`mark`, `marked`, `unmark`, `marks`), per adapter and sha256, says a blob is
   being collected: the registry refuses to reference a marked blob, which is what makes
   collection safe (mint/blobs/collector.py). Marks live beside the blobs, under
   `gc/marks/<adapter id>/<sha256>`.
"""

from __future__ import annotations

import hashlib
import re
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple

from mint.domain.errors import DataLoss, InvalidArgument

_SHA256 = re.compile(r"[0-9a-f]{64}")
_ADAPTER_ID = re.compile(r"[0-9a-f]{32}")  # the registry's uuid4().hex
BLOBS_PREFIX = "blobs/"
KEYS_PREFIX = "keys/"
ERASURES_PREFIX = "erasures/"
MARKS_PREFIX = "gc/marks/"
_BLOB_KEY = re.compile(
    r"blobs/(?P<adapter>[0-9a-f]{32})/sha256/[0-9a-f]{2}/(?P<sha256>[0-9a-f]{64})"
)
_MARK_KEY = re.compile(r"gc/marks/(?P<adapter>[0-9a-f]{32})/(?P<sha256>[0-9a-f]{64})")


@dataclass(frozen=True)
class BlobRef:
    sha256: str
    size: int


class BlobId(NamedTuple):
    """One blob: which adapter's, and its content's sha256."""

    adapter_id: str
    sha256: str


@dataclass(frozen=True)
class StoredBlob:
    blob: BlobId
    size: int
    modified: datetime  # when it was last written (timezone-aware)


@dataclass(frozen=True)
class PendingErasure:
    """An erasure begun and not yet finished: its adapter, stream and when it began."""

    adapter_id: str
    stream: str
    began_at: float  # seconds since the epoch


def check_adapter_id(adapter_id: str) -> str:
    if not _ADAPTER_ID.fullmatch(adapter_id):
        raise InvalidArgument(f"not an adapter id (32 hex digits): {adapter_id!r}")
    return adapter_id


def check_sha256(sha256: str) -> str:
    if not _SHA256.fullmatch(sha256):
        raise InvalidArgument(f"not a sha256 hex digest: {sha256!r}")
    return sha256


def adapter_blobs_prefix(adapter_id: str) -> str:
    return f"{BLOBS_PREFIX}{check_adapter_id(adapter_id)}/"


def blob_key(adapter_id: str, sha256: str) -> str:
    check_sha256(sha256)
    return f"{adapter_blobs_prefix(adapter_id)}sha256/{sha256[:2]}/{sha256}"


def mark_key(adapter_id: str, sha256: str) -> str:
    return f"{MARKS_PREFIX}{check_adapter_id(adapter_id)}/{check_sha256(sha256)}"


def blob_of(key: str) -> BlobId | None:
    """The blob a blob key or a mark key names (None: not such a key)."""
    match = _BLOB_KEY.fullmatch(key) or _MARK_KEY.fullmatch(key)
    return BlobId(match["adapter"], match["sha256"]) if match else None


def data_key_key(adapter_id: str) -> str:
    return KEYS_PREFIX + check_adapter_id(adapter_id)


def erasure_key(adapter_id: str) -> str:
    return ERASURES_PREFIX + check_adapter_id(adapter_id)


def checked_ref(data: bytes, expected_sha256: str | None) -> BlobRef:
    digest = hashlib.sha256(data).hexdigest()
    if expected_sha256 is not None and digest != expected_sha256:
        raise InvalidArgument(
            f"content sha256 is {digest}, but the request declared {expected_sha256}: "
            "the upload was altered or truncated; upload it again"
        )
    return BlobRef(digest, len(data))


def verified(sha256: str, data: bytes) -> bytes:
    if hashlib.sha256(data).hexdigest() != sha256:
        raise DataLoss(f"blob {sha256} is corrupt: its bytes no longer match its sha256")
    return data


class BlobStore(ABC):
    @abstractmethod
    def put(self, adapter_id: str, data: bytes, expected_sha256: str | None = None) -> BlobRef:
        """Store `data` as one of the adapter's blobs (if not already stored); its reference."""

    @abstractmethod
    def get(self, adapter_id: str, sha256: str) -> bytes:
        """The verified bytes; NotFound if absent, DataLoss if altered, Erased if erased."""

    @abstractmethod
    def exists(self, adapter_id: str, sha256: str) -> bool:
        """True if the adapter has a blob with this digest stored."""

    @abstractmethod
    def stored(self) -> Iterator[StoredBlob]:
        """Every stored blob (in no particular order), read as it goes."""

    @abstractmethod
    def delete(self, adapter_id: str, sha256: str) -> None:
        """Remove a blob (nothing if it is not there)."""

    # ---- erasure ------------------------------------------------------------------

    @abstractmethod
    def begin_erasure(self, adapter_id: str, stream: str) -> None:
        """Note that the adapter is about to be erased (before its event is appended)."""

    @abstractmethod
    def erase(self, adapter_id: str) -> None:
        """Destroy the data key, delete the adapter's blobs, forget the pending erasure."""

    @abstractmethod
    def abandon_erasure(self, adapter_id: str) -> None:
        """Forget a pending erasure whose event never landed; the adapter stays as it was."""

    @abstractmethod
    def pending_erasures(self) -> list[PendingErasure]:
        """Erasures begun and not yet finished or abandoned (few: they are in flight)."""

    # ---- collection marks ---------------------------------------------------------

    @abstractmethod
    def mark(self, adapter_id: str, sha256: str) -> None:
        """Say that the blob is being collected (it need not exist)."""

    @abstractmethod
    def marked(self, adapter_id: str, sha256: str) -> bool:
        """True while the blob is marked for collection."""

    @abstractmethod
    def unmark(self, adapter_id: str, sha256: str) -> None:
        """Remove the mark (nothing if there is none)."""

    @abstractmethod
    def marks(self) -> Iterator[BlobId]:
        """The blobs marked now (a collector that stopped halfway leaves some)."""
