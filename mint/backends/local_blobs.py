"""Blobs in a local directory (the embedded back end), in the same key layout as S3,
sealed per adapter with the wrapped data keys beside them (see mint/blobs/port.py)."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from mint.blobs.sealed import Listed, SealedBlobStore
from mint.blobs.sealing import Kek


class LocalRawObjects:
    def __init__(self, root: Path) -> None:
        self.root = root

    def create(self, key: str, data: bytes | bytearray) -> bool:
        final = self.root / key
        if final.exists():
            return False
        staging = self._staged(final, data)
        try:
            os.link(staging, final)  # atomic, and fails if another writer linked first
        except FileExistsError:
            return False
        finally:
            os.unlink(staging)
        return True

    def replace(self, key: str, data: bytes) -> None:
        final = self.root / key
        os.replace(self._staged(final, data), final)

    def read(self, key: str) -> bytes | None:
        try:
            return (self.root / key).read_bytes()
        except FileNotFoundError:
            return None

    def exists(self, key: str) -> bool:
        return (self.root / key).is_file()

    def delete(self, key: str) -> None:
        (self.root / key).unlink(missing_ok=True)

    def keys_under(self, prefix: str) -> list[str]:
        return sorted(str(p.relative_to(self.root).as_posix()) for p in self._under(prefix))

    def listed_under(self, prefix: str) -> Iterator[Listed]:
        for path in self._under(prefix):
            try:
                st = path.stat()
            except FileNotFoundError:
                continue  # deleted since it was listed
            key = path.relative_to(self.root).as_posix()
            yield Listed(key, st.st_size, datetime.fromtimestamp(st.st_mtime, UTC))

    def _under(self, prefix: str) -> Iterator[Path]:
        folder = (self.root / prefix).parent if not prefix.endswith("/") else self.root / prefix
        if not folder.is_dir():
            return
        for path in folder.rglob("*"):
            key = path.relative_to(self.root).as_posix()
            if key.startswith(prefix) and "/.upload-" not in f"/{key}" and path.is_file():
                yield path

    def _staged(self, final: Path, data: bytes | bytearray) -> str:
        """`data` written beside `final` and fsynced: readers see all of it or nothing."""
        final.parent.mkdir(parents=True, exist_ok=True)
        fd, staging = tempfile.mkstemp(dir=final.parent, prefix=".upload-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(staging)
            raise
        return staging


def local_kek(path: Path) -> Kek:
    """The embedded back end's KEK: read from `path`, or made there (0600) on first use.
    Kept beside the data it protects, it shreds nothing once the folder is copied whole;
    a deployment passes a KEK from a Secret instead."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        _, key = Kek.generate()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(key.hex() + "\n")
    return Kek.from_file(path)


class LocalBlobStore(SealedBlobStore):
    def __init__(self, root: Path, kek: Kek) -> None:
        super().__init__(LocalRawObjects(root), kek)
        self.root = root
