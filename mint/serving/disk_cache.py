"""The node's local disk tier: adapter weights by sha256, within a byte budget, least
recently used first out. A hit is re-hashed on read (a corrupt file is dropped and
reported as a miss), so the disk is a cache, never a source of truth."""

from __future__ import annotations

import hashlib
import os
import threading
from collections import OrderedDict
from pathlib import Path


class DiskCache:
    def __init__(self, folder: Path, budget_bytes: int) -> None:
        self.folder, self.budget_bytes = folder, budget_bytes
        folder.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._sizes: OrderedDict[str, int] = OrderedDict()  # LRU first
        for path in sorted(folder.glob("*.safetensors"), key=lambda p: p.stat().st_mtime):
            self._sizes[path.stem] = path.stat().st_size
        for stale in folder.glob("*.tmp"):  # a write interrupted by a crash
            stale.unlink()
        self._trim()

    @property
    def used_bytes(self) -> int:
        with self._lock:
            return sum(self._sizes.values())

    def __len__(self) -> int:
        with self._lock:
            return len(self._sizes)

    def get(self, sha256: str) -> bytes | None:
        path = self._path(sha256)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        if hashlib.sha256(data).hexdigest() != sha256:
            self._drop(sha256)
            return None
        with self._lock:
            if sha256 in self._sizes:
                self._sizes.move_to_end(sha256)
        return data

    def put(self, sha256: str, data: bytes | memoryview) -> None:
        """Keep verified bytes (the caller checked the hash); skipped if over budget."""
        if len(data) > self.budget_bytes:
            return
        tmp = self.folder / f"{sha256}.{os.getpid()}.{threading.get_ident()}.tmp"
        tmp.write_bytes(data)
        tmp.replace(self._path(sha256))  # atomic: readers see the whole file or none
        with self._lock:
            self._sizes[sha256] = len(data)
            self._sizes.move_to_end(sha256)
        self._trim()

    def _trim(self) -> None:
        with self._lock:
            victims = []
            while self._sizes and sum(self._sizes.values()) > self.budget_bytes:
                victims.append(self._sizes.popitem(last=False)[0])
            if sum(self._sizes.values()) > self.budget_bytes:  # a negative size, say
                raise RuntimeError(f"the disk tier in {self.folder} is over its budget")
        for sha256 in victims:
            self._path(sha256).unlink(missing_ok=True)

    def drop(self, sha256: str) -> None:
        """Delete the file of `sha256` if there is one (its adapter was erased)."""
        self._drop(sha256)

    def _drop(self, sha256: str) -> None:
        with self._lock:
            self._sizes.pop(sha256, None)
        self._path(sha256).unlink(missing_ok=True)

    def _path(self, sha256: str) -> Path:
        if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
            raise ValueError(f"not a sha256 hex digest: {sha256!r}")
        return self.folder / f"{sha256}.safetensors"
