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
   (`erase`) or dropped (`abandon_erasure`), so a crash in between is finished later.
"""

from __future__ import annotations

import hashlib
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass

from mint.domain.errors import DataLoss, InvalidArgument

_SHA256 = re.compile(r"[0-9a-f]{64}")
_ADAPTER_ID = re.compile(r"[0-9a-f]{32}")  # the registry's uuid4().hex
KEYS_PREFIX = "keys/"
ERASURES_PREFIX = "erasures/"


@dataclass(frozen=True)
class BlobRef:
    sha256: str
    size: int


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


def adapter_blobs_prefix(adapter_id: str) -> str:
    return f"blobs/{check_adapter_id(adapter_id)}/"


def blob_key(adapter_id: str, sha256: str) -> str:
    if not _SHA256.fullmatch(sha256):
        raise InvalidArgument(f"not a sha256 hex digest: {sha256!r}")
    return f"{adapter_blobs_prefix(adapter_id)}sha256/{sha256[:2]}/{sha256}"


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
