"""The registry's checkpoint signer: every few seconds, for each partition this replica
owns, sign the heads of the streams that changed since the partition's last checkpoint.

Several replicas: each signs the partitions it owns, as it owns them (a partition given
up is forgotten; one taken again starts from the last checkpoint stored for it, whoever
signed it). Two replicas handing a partition over may both sign the next number: both
checkpoints are true of the committed log, and numbers are never skipped, since each
signer numbers on from the last checkpoint it read or wrote. It reads only committed
events, so it never vouches for an event that may still be rolled back.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from .checkpoints import CheckpointStore, SigningKey, checkpoints_of, span_of, unverified
from .port import Recorded

log = logging.getLogger(__name__)

# partition, next offset -> that partition's committed events from there, in log order
PartitionReader = Callable[[int, int], Iterable[Recorded]]
# after each round: checkpoints written, partitions that failed
RoundObserver = Callable[[int, int], None]


@dataclass(frozen=True)
class Cursor:
    next_sequence: int
    next_offset: int


class CheckpointSigner:
    def __init__(
        self,
        key: SigningKey,
        store: CheckpointStore,
        read_partition: PartitionReader,
        owned: Callable[[], Iterable[int]],
        signer: str = "",
        observe: RoundObserver | None = None,
    ) -> None:
        self.key, self.store, self.read_partition = key, store, read_partition
        self.owned, self.signer, self.observe = owned, signer, observe
        self._cursors: dict[int, Cursor] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def sign_once(self) -> int:
        """Sign what changed in every owned partition; the number of checkpoints written.
        A partition that fails (the store or the log unavailable) is tried next round."""
        owned = set(self.owned())
        self._cursors = {p: c for p, c in self._cursors.items() if p in owned}
        written = failed = 0
        for partition in sorted(owned):
            try:
                written += self._sign(partition)
            except Exception as exc:  # the next round tries again; the others go on
                failed += 1
                log.warning("could not sign partition %d's checkpoint: %s", partition, exc)
        if self.observe is not None:
            self.observe(written, failed)
        return written

    def _sign(self, partition: int) -> int:
        cursor = self._cursors.get(partition) or self._cursor_from_store(partition)
        span = span_of(self.read_partition(partition, cursor.next_offset), cursor.next_offset)
        checkpoints = checkpoints_of(span, partition, cursor.next_sequence, self.signer)
        for checkpoint in checkpoints:
            self.store.append(partition, self.key.sign(checkpoint))
        self._cursors[partition] = Cursor(cursor.next_sequence + len(checkpoints), span.to_offset)
        return len(checkpoints)

    def _cursor_from_store(self, partition: int) -> Cursor:
        last = self.store.last(partition)
        if last is None:
            return Cursor(1, 0)
        checkpoint = unverified(last)
        return Cursor(checkpoint.sequence + 1, checkpoint.to_offset)

    def start(self, every_s: float) -> None:
        """Sign every `every_s` seconds on a thread of its own, until `close`."""

        def loop() -> None:
            while not self._stop.wait(every_s):
                self.sign_once()

        self._thread = threading.Thread(target=loop, name="checkpoints", daemon=True)
        self._thread.start()

    def close(self, timeout_s: float = 10.0) -> None:
        """Stop signing, and sign what changed since the last round, unless the round in
        progress outlasts `timeout_s` (the log unreachable: a stopping registry does not
        wait on it; the next owner signs those events)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout_s)
            if self._thread.is_alive():
                return
        self.sign_once()
