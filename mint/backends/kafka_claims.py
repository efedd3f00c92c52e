"""Who writes which partition: the writer's claims, and its answers where it holds none.

Under group ownership each producer a replica creates gets a transactional id never used
before, and `Claims` (kafka_ownership.py) records which id, and which take of it, writes
each partition. The writer (kafka_writer.py) fences the id that claimed a partition before
taking it, unless that very claim gave the partition up.
"""

from __future__ import annotations

import uuid
from typing import Protocol

from mint.domain.errors import Unavailable

# A claim is "<transactional id>\n<token of that take>\n<the claimant's address>".
CLAIM_SEPARATOR = "\n"


class Claims(Protocol):
    """Which transactional id writes which partition (group ownership)."""

    advertised: str  # this replica's registry address, named in its claims ("": unknown)

    def new_transactional_id(self) -> str:
        """An id no producer has used before."""
        ...

    def previous_writer(self, partition: int) -> str | None:
        """The id that last claimed `partition`, if any. Raises Unavailable unless this
        replica is assigned the partition in the group's current generation."""
        ...

    def claim(self, partition: int, claim: str) -> None:
        """Record `claim` (a transactional id, this take's token, this replica's address)
        as the partition's writer. Raises Unavailable if this replica is not assigned the
        partition in the group's current generation."""
        ...


def writer_of(claim: str) -> str:
    """The transactional id that made `claim`."""
    return claim.split(CLAIM_SEPARATOR, 1)[0]


def new_claim(transactional_id: str, advertised: str) -> str:
    """A claim by `transactional_id` for one take (a fresh token), naming `advertised`."""
    return CLAIM_SEPARATOR.join((transactional_id, uuid.uuid4().hex[:12], advertised))


def earlier_writers(previous: str | None, static_id: str, partition: int) -> set[str]:
    """The ids that may have written `partition` before: the one that claimed it last or,
    with no claim yet, a static instance (`static_id`) or a registry from before claims
    (one producer per partition, `<prefix>-p<n>`)."""
    if previous:
        return {writer_of(previous)}
    return {static_id, f"{static_id}-p{partition}"}


def address_of(claim: str) -> str:
    """The registry address of the replica that made `claim` ("" if it named none)."""
    parts = claim.split(CLAIM_SEPARATOR)
    return parts[2] if len(parts) > 2 else ""


class NotHeld(Exception):
    """This writer holds no current state of the partition (another replica's, or being
    taken again)."""


def writable_error(partition: int, assigned: set[int], fenced: bool) -> Unavailable:
    if fenced:
        return Unavailable(f"partition {partition} moved to another writer; retry")
    if partition in assigned:
        return Unavailable(f"partition {partition} is being taken again here; retry")
    return Unavailable(f"this replica does not own partition {partition}; retry elsewhere")
