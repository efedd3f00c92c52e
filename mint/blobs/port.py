"""The `BlobStore` port: adapter weights, content-addressed by sha256.

Contract (tests/contract/test_blob_store.py runs it against each back end):
1. `put` stores bytes under `blobs/sha256/<2 hex>/<64 hex>`, once however often uploaded;
2. a blob is visible only whole and only after its sha256 was checked; a caller's
   expected sha256 that does not match stores nothing;
3. `get` re-checks the sha256 and raises DataLoss if the stored bytes were altered.
"""

from __future__ import annotations

import hashlib
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass

from mint.domain.errors import DataLoss, InvalidArgument

_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class BlobRef:
    sha256: str
    size: int


def blob_key(sha256: str) -> str:
    if not _SHA256.fullmatch(sha256):
        raise InvalidArgument(f"not a sha256 hex digest: {sha256!r}")
    return f"blobs/sha256/{sha256[:2]}/{sha256}"


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
