"""Blobs in a local directory (the embedded back end), in the same key layout as S3."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from mint.blobs.port import (
    BLOBS_PREFIX,
    MARKS_PREFIX,
    BlobRef,
    BlobStore,
    StoredBlob,
    blob_key,
    checked_ref,
    digest_of,
    mark_key,
    verified,
)
from mint.domain.errors import NotFound


class LocalBlobStore(BlobStore):
    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, sha256: str) -> Path:
        return self.root / blob_key(sha256)

    def put(self, data: bytes, expected_sha256: str | None = None) -> BlobRef:
        ref = checked_ref(data, expected_sha256)
        final = self._path(ref.sha256)
        if final.exists():
            return ref
        final.parent.mkdir(parents=True, exist_ok=True)
        # Write aside, fsync, then link into place: readers see all of it or nothing.
        fd, staging = tempfile.mkstemp(dir=final.parent, prefix=".upload-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            # A concurrent upload of the same content may win the link: same bytes.
            with contextlib.suppress(FileExistsError):
                os.link(staging, final)
        finally:
            os.unlink(staging)
        return ref

    def get(self, sha256: str) -> bytes:
        try:
            data = self._path(sha256).read_bytes()
        except FileNotFoundError:
            raise NotFound(f"no blob {sha256}") from None
        return verified(sha256, data)

    def exists(self, sha256: str) -> bool:
        return self._path(sha256).exists()

    def stored(self) -> Iterator[StoredBlob]:
        for path in (self.root / BLOBS_PREFIX).glob("*/*"):
            digest = digest_of(path.name)
            if digest is not None:
                st = path.stat()
                yield StoredBlob(digest, st.st_size, datetime.fromtimestamp(st.st_mtime, UTC))

    def delete(self, sha256: str) -> None:
        self._path(sha256).unlink(missing_ok=True)

    def mark(self, sha256: str) -> None:
        path = self.root / mark_key(sha256)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()

    def marked(self, sha256: str) -> bool:
        return (self.root / mark_key(sha256)).exists()

    def unmark(self, sha256: str) -> None:
        (self.root / mark_key(sha256)).unlink(missing_ok=True)

    def marks(self) -> Iterator[str]:
        for path in (self.root / MARKS_PREFIX).glob("*"):
            digest = digest_of(path.name)
            if digest is not None:
                yield digest
