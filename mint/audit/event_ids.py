"""Every event id a verification has seen, and where: to name an id seen twice (an event
appended again, or a new event reusing an old one's id), which no chain shows when the
copy or the new event is chained correctly.

A verification holds no event, but this must hold something of every event, so it is a
table of three 64-bit numbers a slot in arrays (open addressing, at most 3/4 full): a
fingerprint of the id, one of the event's hash (an exact copy has the same), and the
position; 32 to 64 bytes an event, against some 120 for a dict of ints. The ids'
fingerprints are keyed with a secret of the run, so no one can make two ids collide on
purpose; by chance two of 10^7 ids share one with odds of about 1 in 400,000 (and a
collision only ever adds a problem: no event's checks are skipped unless its hash too
matches the first event's).
"""

from __future__ import annotations

import hashlib
import os
from array import array
from dataclasses import dataclass

from mint.eventlog.port import Position

OFFSET_BITS = 48  # a position is partition << 48 | offset: 2^48 records a partition


@dataclass(frozen=True)
class Seen:
    """The first event seen with an id, and whether a later one is an exact copy of it."""

    position: Position
    same_event: bool


class EventIds:
    def __init__(self, slots: int = 1 << 16) -> None:  # a power of two
        self._key = os.urandom(16)
        self._used = 0
        self._ids, self._hashes, self._positions = _empty(slots), _empty(slots), _empty(slots)

    def __len__(self) -> int:
        return self._used

    def note(self, event_id: str, event_hash: bytes, position: Position) -> Seen | None:
        """Where an event with this id was seen before (None the first time, when this
        one is noted)."""
        fingerprint = self._fingerprint(event_id.encode())
        slot = self._slot(fingerprint)
        if self._ids[slot]:
            same = self._hashes[slot] == _leading(event_hash)
            return Seen(_position(self._positions[slot]), same)
        self._ids[slot] = fingerprint
        self._hashes[slot] = _leading(event_hash)
        self._positions[slot] = _packed(position)
        self._used += 1
        if self._used * 4 > len(self._ids) * 3:
            self._grow()
        return None

    def _fingerprint(self, data: bytes) -> int:
        digest = hashlib.blake2b(data, digest_size=8, key=self._key).digest()
        return int.from_bytes(digest) or 1  # 0 marks an empty slot

    def _slot(self, fingerprint: int) -> int:
        """The slot holding `fingerprint`, or the empty one where it belongs."""
        mask = len(self._ids) - 1
        slot = fingerprint & mask
        while self._ids[slot] and self._ids[slot] != fingerprint:
            slot = (slot + 1) & mask
        return slot

    def _grow(self) -> None:
        """Twice the slots, every entry moved to its slot there."""
        old = self._ids, self._hashes, self._positions
        slots = 2 * len(self._ids)
        self._ids, self._hashes, self._positions = _empty(slots), _empty(slots), _empty(slots)
        for fingerprint, event_hash, position in zip(*old, strict=True):
            if fingerprint:
                slot = self._slot(fingerprint)
                self._ids[slot], self._hashes[slot] = fingerprint, event_hash
                self._positions[slot] = position


def _empty(slots: int) -> array[int]:
    return array("Q", bytes(8 * slots))


def _leading(event_hash: bytes) -> int:
    """The first 64 bits of the event's hash (a sha256 already: no need to hash again)."""
    return int.from_bytes(event_hash[:8])


def _packed(position: Position) -> int:
    return position.partition << OFFSET_BITS | position.offset


def _position(packed: int) -> Position:
    return Position(packed >> OFFSET_BITS, packed & ((1 << OFFSET_BITS) - 1))
