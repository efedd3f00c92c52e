"""The `BlobStore` port: adapter weights, content-addressed by sha256.

Contract (tests/contract/test_blob_store.py runs it against each back end):
1. `put` stores bytes under `blobs/sha256/<2 hex>/<64 hex>`, once however often uploaded;
2. a blob is visible only whole and only after its sha256 was checked; a caller's
   expected sha256 that does not match stores nothing;
3. `get` re-checks the sha256 and raises DataLoss if the stored bytes were altered;
4. `stored` lists every blob with its size and when it was last written; `delete`
   removes one (absent is fine);
5. a mark (`mark`, `marked`, `unmark`, `marks`) says a blob is being collected: the
   registry refuses to reference a marked blob, which is what makes collection safe
   (mint/blobs/collector.py). Marks live beside the blobs, under `gc/marks/`.
"""

from __future__ import annotations

import hashlib
import re
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

from mint.domain.errors import DataLoss, InvalidArgument

_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class BlobRef:
    sha256: str
    size: int


@dataclass(frozen=True)
class StoredBlob:
    sha256: str
    size: int
    modified: datetime  # when it was last written (timezone-aware)


BLOBS_PREFIX = "blobs/sha256/"
MARKS_PREFIX = "gc/marks/"


def blob_key(sha256: str) -> str:
    return f"{BLOBS_PREFIX}{_checked(sha256)[:2]}/{sha256}"


def mark_key(sha256: str) -> str:
    return f"{MARKS_PREFIX}{_checked(sha256)}"


def digest_of(key: str) -> str | None:
    """The sha256 a blob or mark key names (None: not such a key)."""
    digest = key.rsplit("/", 1)[-1]
    return digest if _SHA256.fullmatch(digest) else None


def _checked(sha256: str) -> str:
    if not _SHA256.fullmatch(sha256):
        raise InvalidArgument(f"not a sha256 hex digest: {sha256!r}")
    return sha256


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
    def put(self, data: bytes, expected_sha256: str | None = None) -> BlobRef:
        """Store `data` (if not already stored) and return its reference."""

    @abstractmethod
    def get(self, sha256: str) -> bytes:
        """The verified bytes; NotFound if absent, DataLoss if altered."""

    @abstractmethod
    def exists(self, sha256: str) -> bool:
        """True if a blob with this digest is stored."""

    @abstractmethod
    def stored(self) -> Iterator[StoredBlob]:
        """Every stored blob (in no particular order), read as it goes."""

    @abstractmethod
    def delete(self, sha256: str) -> None:
        """Remove a blob (nothing if it is not there)."""

    # ---- collection marks ---------------------------------------------------------

    @abstractmethod
    def mark(self, sha256: str) -> None:
        """Say that the blob is being collected (it need not exist)."""

    @abstractmethod
    def marked(self, sha256: str) -> bool:
        """True while the blob is marked for collection."""

    @abstractmethod
    def unmark(self, sha256: str) -> None:
        """Remove the mark (nothing if there is none)."""

    @abstractmethod
    def marks(self) -> Iterator[str]:
        """The digests marked now (a collector that stopped halfway leaves some)."""
