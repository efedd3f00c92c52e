"""Host memory written before a load needs it.

Every resident revision's bytes stay in host memory (the host tier keeps views of them),
so a node that is filling up asks the OS for new pages on every load, and the first
write to each page faults. On the 2-core machine of `bench/residency_load.py` those
faults cost about as much as the S3 GET of the 2 MB itself. The reserve keeps buffers of
the sizes recently loaded ready, allocated and written by a thread of its own at low
priority (torch fills them without the GIL), so a load copies its fetched bytes into
memory that is already there, and the GET's own buffer, freed once the bytes are copied
and hashed, is reused by the next GET (as S-LoRA's preallocated memory pool). On a miss
the load keeps its fetched bytes, as without a reserve.

Buffers of one size serve adapters of one shape, which is what a node mostly holds: the
adapters trained with one config. When the reserve is full, buffers of the sizes asked
for least recently give way, one at a time.
"""

from __future__ import annotations

import itertools
import logging
import os
import queue
import sys
import threading
from collections import OrderedDict
from collections.abc import Callable

import torch

log = logging.getLogger(__name__)
RESERVE_BYTES = 32 << 20  # a node's default
DEPTH = 8  # buffers kept ready per size (fewer if they would pass the reserve's bytes)


class HostReserve:
    def __init__(self, reserve_bytes: int, on_take: Callable[[bool], None] | None = None) -> None:
        """`on_take(hit)` is told of each `take`, whether the reserve had the buffer."""
        self.reserve_bytes, self.on_take = reserve_bytes, on_take
        self._ready: OrderedDict[int, list[torch.Tensor]] = OrderedDict()  # LRU size first
        self._owed: dict[int, int] = {}  # per size: buffers the filler has yet to make
        self._held_bytes = 0
        self.made = 0  # buffers the filler made
        self._closed = False
        self._lock = threading.Lock()
        self._wanted: queue.SimpleQueue[int | None] = queue.SimpleQueue()
        self._filler = threading.Thread(target=self._fill, name="host-reserve", daemon=True)
        self._filler.start()

    def take(self, nbytes: int) -> torch.Tensor | None:
        """A written CPU uint8 buffer of `nbytes` if the reserve has one (it then makes
        another), else None (it makes some for next time)."""
        buffer, wanted = None, 0
        with self._lock:
            if not self._closed and 0 < nbytes <= self.reserve_bytes:
                ready = self._ready.setdefault(nbytes, [])
                self._ready.move_to_end(nbytes)
                buffer = ready.pop() if ready else None
                if buffer is not None:
                    self._held_bytes -= nbytes
                wanted = self._top_up(nbytes)
        for _ in range(wanted):
            self._wanted.put(nbytes)
        if self.on_take is not None:
            self.on_take(buffer is not None)
        return buffer

    def ready(self, nbytes: int) -> int:
        """How many buffers of `nbytes` are ready."""
        with self._lock:
            return len(self._ready.get(nbytes, ()))

    @property
    def held_bytes(self) -> int:
        return self._held_bytes

    @property
    def pending(self) -> int:
        """Buffers asked of the filler and not made yet."""
        with self._lock:
            return sum(self._owed.values())

    def close(self) -> None:
        """Stop making buffers and let go of those held."""
        with self._lock:
            self._closed = True
            self._ready.clear()
            self._held_bytes = 0
        self._wanted.put(None)
        self._filler.join(timeout=5)

    def _top_up(self, nbytes: int) -> int:
        """How many more buffers of `nbytes` to make (under the lock): the reserve is
        shared by the sizes in use (ready or being made), so sizes taken in turn do not
        evict each other's buffers to make their own."""
        in_use = {s for s, b in self._ready.items() if b} | set(self._owed) | {nbytes}
        depth = min(DEPTH, self.reserve_bytes // (nbytes * len(in_use)))
        owed = self._owed.get(nbytes, 0)
        more = max(0, depth - len(self._ready[nbytes]) - owed)
        if more:
            self._owed[nbytes] = owed + more
        return more

    def _fill(self) -> None:
        _lower_priority()
        while (nbytes := self._wanted.get()) is not None:
            buffer = None
            try:
                if not self._closed:
                    buffer = torch.empty(nbytes, dtype=torch.uint8)
                    buffer.fill_(0)  # the first write faults every page in, here, not in a load
            except RuntimeError as exc:  # out of memory: loads keep their fetched bytes
                log.warning("the host reserve could not make a buffer of %d bytes: %s", nbytes, exc)
            with self._lock:
                self._owed[nbytes] -= 1
                if not self._owed[nbytes]:
                    del self._owed[nbytes]
                if buffer is not None:
                    self._keep(buffer, nbytes)
            self.made += buffer is not None

    def _keep(self, buffer: torch.Tensor, nbytes: int) -> None:
        """Hold `buffer` if its size is still wanted and room can be made (under the lock)."""
        ready = self._ready.get(nbytes)
        if ready is None or self._closed:
            return  # its size gave way meanwhile
        older = list(itertools.takewhile(lambda s: s != nbytes, self._ready))
        room = self.reserve_bytes - self._held_bytes + sum(s * len(self._ready[s]) for s in older)
        if room < nbytes:
            return  # evicting every older buffer would not make room: evict none
        for size in older:  # least recently asked for first, one buffer at a time
            buffers = self._ready[size]
            while buffers and self._held_bytes + nbytes > self.reserve_bytes:
                buffers.pop()
                self._held_bytes -= size
                if not buffers:
                    del self._ready[size]
        ready.append(buffer)
        self._held_bytes += nbytes


def _lower_priority() -> None:
    """Nice this thread (Linux applies it per thread) so that loads come first."""
    if sys.platform != "linux":
        return
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
    except OSError as exc:  # not allowed: no matter
        log.debug("the host reserve runs at normal priority: %s", exc)
