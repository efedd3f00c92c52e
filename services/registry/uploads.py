"""Receiving PublishRevision uploads without letting them exhaust the registry's memory.

An upload declares its size in its header. Before any body byte is read it reserves that
many bytes of the server's `UploadBudget`; when the uploads in flight already hold too
much of it, the call is refused with RESOURCE_EXHAUSTED, which says to retry later.
While the body arrives it is spooled to a temporary file (past SPOOL_BYTES), then read
back once for validation and storage; while it is stored it is held a second time,
sealed (mint/blobs/sealing.py), so an upload reserves twice its size and the uploads'
share of the registry's memory stays about the budget.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

from mint.domain.errors import InvalidArgument, ResourceExhausted, Unavailable
from mint.v1 import registry_pb2 as pb

MiB = 1024 * 1024
SPOOL_BYTES = 4 * MiB  # an upload beyond this waits on disk, not in memory, while it arrives
MACHINE_SHARE = 4  # by default uploads may hold a quarter of the memory the process may use
CGROUP_MEMORY_MAX = Path("/sys/fs/cgroup/memory.max")  # a container's limit (cgroup v2)
HELD_PER_BYTE = 2  # an upload as received, and its sealed copy while it is stored


def held_while_stored(size: int) -> int:
    """The memory an upload of `size` weight bytes holds at its peak."""
    return HELD_PER_BYTE * size


class UploadBudget:
    """The bytes of uploads a server holds at once; each reserves its declared size."""

    def __init__(self, max_bytes: int, on_refused: Callable[[], None] = lambda: None) -> None:
        """`on_refused` is called for each upload turned away (metrics)."""
        if max_bytes <= 0:
            raise ValueError(f"an upload budget must be positive, got {max_bytes}")
        self.max_bytes, self.on_refused = max_bytes, on_refused
        self._held = 0
        self._lock = threading.Lock()

    @property
    def held(self) -> int:
        return self._held

    @contextlib.contextmanager
    def reserve(self, size: int) -> Iterator[None]:
        """Hold `size` bytes while the block runs; ResourceExhausted if they are not free."""
        self._take(size)
        try:
            yield
        finally:
            with self._lock:
                self._held -= size

    def _take(self, size: int) -> None:
        try:
            self._take_or_refuse(size)
        except ResourceExhausted:
            self.on_refused()
            raise

    def _take_or_refuse(self, size: int) -> None:
        if size > self.max_bytes:
            raise ResourceExhausted(
                f"the upload needs {size:,} bytes (its weights, and their sealed copy while "
                "they are stored), more than this registry takes in at once "
                f"(--max-upload-bytes-in-flight {self.max_bytes:,}): it cannot be accepted here"
            )
        with self._lock:
            if self._held + size > self.max_bytes:
                raise ResourceExhausted(
                    f"uploads in flight hold {self._held:,} of this registry's "
                    f"{self.max_bytes:,} upload bytes, and this one needs {size:,}: "
                    "retry later"
                )
            self._held += size


def machine_sized_budget(largest_upload: int) -> int:
    """A share of the memory this process may use, and never less than one largest upload."""
    return max(held_while_stored(largest_upload), usable_memory_bytes() // MACHINE_SHARE)


def usable_memory_bytes() -> int:
    """The machine's memory, or its container's limit where that is lower."""
    physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    try:
        limit = CGROUP_MEMORY_MAX.read_text().strip()  # a number of bytes, or "max"
    except OSError:
        return physical
    return min(physical, int(limit)) if limit.isdigit() else physical


def receive_weights(parts: Iterator[pb.PublishRevisionRequest], size: int) -> bytes:
    """The `size` weight bytes that follow the header; a longer or shorter body is refused,
    a longer one as soon as it passes `size` (the bytes its reservation covers)."""
    try:
        with tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES) as spool:
            _spool(parts, size, spool)
            spool.seek(0)
            return spool.read(size)  # one allocation of `size`: read straight into it
    except OSError as exc:  # the spool's disk: full, or failing
        raise Unavailable(f"the registry cannot hold the upload now ({exc}); retry") from exc


def _spool(parts: Iterator[pb.PublishRevisionRequest], size: int, spool: IO[bytes]) -> None:
    received = 0
    for part in parts:
        if part.WhichOneof("part") != "weights_chunk":
            raise InvalidArgument("only weights_chunk messages may follow the header")
        received += len(part.weights_chunk)
        if received > size:
            raise InvalidArgument(
                f"more weight bytes than the header's weights_size ({size:,}): "
                "declare the file's exact size"
            )
        spool.write(part.weights_chunk)
    if received != size:
        raise InvalidArgument(
            f"received {received:,} weight bytes but the header declared "
            f"{size:,}: the upload is incomplete"
        )
