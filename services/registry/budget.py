"""The bytes a registry holds for weights in transit, so that many transfers at once
cannot exhaust its memory.

Each transfer reserves what it will hold at its peak before it holds any of it: an upload
its declared size twice (as received, and sealed while stored: mint/blobs/sealing.py), a
download the revision's size twice (the sealed blob, and the weights opened from it
while they are sent; AES-GCM opens a blob whole). When the transfers in flight already
hold too much, the call is refused with RESOURCE_EXHAUSTED, which says to retry later
and sends a pushback that the MinT clients wait out before retrying by themselves.
Uploads and downloads have a budget each, so a burst of one never starves the other.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from mint.domain.errors import ResourceExhausted

MiB = 1024 * 1024
# By default each budget is an eighth of the memory the process may use: together a quarter.
MACHINE_SHARE = 8
CGROUP_MEMORY_MAX = Path("/sys/fs/cgroup/memory.max")  # a container's limit (cgroup v2)
HELD_PER_BYTE = 2  # the weights, and their sealed copy
# The pushback sent with a refusal for now (clients add jitter): about a transfer's time.
RETRY_AFTER_S = 0.5


def held_in_transit(size: int) -> int:
    """The memory a transfer of `size` weight bytes holds at its peak."""
    return HELD_PER_BYTE * size


@dataclass(frozen=True)
class Direction:
    """What a budget's refusals say: the transfers it covers and how to change it."""

    noun: str  # "upload"
    flag: str  # the server flag that sets the budget
    held: str  # what a reservation covers
    never: str  # the end of the message for a transfer that can never fit


UPLOADS = Direction(
    "upload",
    "--max-upload-bytes-in-flight",
    "its weights, and their sealed copy while they are stored",
    "it cannot be accepted here",
)
DOWNLOADS = Direction(
    "download",
    "--max-download-bytes-in-flight",
    "the sealed blob, and the weights opened from it while they are sent",
    "this registry's operator must raise it for this revision to be downloaded",
)


class ByteBudget:
    """The bytes of one direction's transfers a server holds at once."""

    def __init__(
        self, max_bytes: int, direction: Direction, on_refused: Callable[[], None] = lambda: None
    ) -> None:
        """`on_refused` is called for each transfer turned away (metrics)."""
        if max_bytes <= 0:
            raise ValueError(f"a {direction.noun} budget must be positive, got {max_bytes}")
        self.max_bytes, self.direction, self.on_refused = max_bytes, direction, on_refused
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
        d = self.direction
        if size > self.max_bytes:
            raise ResourceExhausted(
                f"the {d.noun} needs {size:,} bytes ({d.held}), more than this registry "
                f"holds for {d.noun}s at once ({d.flag} {self.max_bytes:,}): {d.never}"
            )
        with self._lock:
            if self._held + size > self.max_bytes:
                raise ResourceExhausted(
                    f"{d.noun}s in flight hold {self._held:,} of this registry's "
                    f"{self.max_bytes:,} {d.noun} bytes, and this one needs {size:,}: "
                    "retry later",
                    retry_after_s=RETRY_AFTER_S,
                )
            self._held += size


def machine_sized_budget(largest_transfer: int) -> int:
    """A share of the memory this process may use, and never less than one largest
    transfer."""
    return max(held_in_transit(largest_transfer), usable_memory_bytes() // MACHINE_SHARE)


def usable_memory_bytes() -> int:
    """The machine's memory, or its container's limit where that is lower."""
    physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    try:
        limit = CGROUP_MEMORY_MAX.read_text().strip()  # a number of bytes, or "max"
    except OSError:
        return physical
    return min(physical, int(limit)) if limit.isdigit() else physical
