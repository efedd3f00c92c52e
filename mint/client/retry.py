"""How the registry clients retry, blocking or async alike: which statuses, how long to
pause, and which replica each adapter's commands go to.

Registry commands are retried here, not by a gRPC service-config retry policy: a policy
retries on the same channel, while a replica that does not own an adapter's partition
answers UNAVAILABLE, so a retry must move on to another replica (and, for a client-
streaming upload, start a new stream). Every retry sends the same request, request id
included, so the registry applies a command at most once and a retry learns the first
attempt's outcome.
"""

from __future__ import annotations

import random
import threading
import time
import uuid

import grpc
from cachetools import LRUCache

# Safe to send again: every command carries its request id, and reads change nothing.
RETRYABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})


def new_request_id() -> str:
    return uuid.uuid4().hex


class Backoff:
    """Jittered pauses, 0.1 s doubling up to 2 s, while they end within `retry_for_s` of
    the first attempt. Jittered, so that clients failing together do not retry together."""

    def __init__(self, retry_for_s: float) -> None:
        self.deadline = time.monotonic() + retry_for_s
        self.delay = 0.1

    def next_pause(self) -> float | None:
        """The pause before the next attempt, or None: give up."""
        if time.monotonic() + self.delay > self.deadline:
            return None
        pause = self.delay * random.uniform(0.5, 1.5)
        self.delay = min(self.delay * 2, 2.0)
        return pause


class ReplicaChoice:
    """Which of `count` registry replicas each adapter's commands go to: the one that last
    took them. A replica answering retryably for an adapter (not its owner, or down) moves
    that adapter on to the next, so retries meet the owner within one pass."""

    def __init__(self, count: int) -> None:
        self.count = count
        self._chosen: LRUCache[str, int] = LRUCache(maxsize=100_000)
        self._lock = threading.Lock()

    def choose(self, key: str) -> int:
        with self._lock:
            if key not in self._chosen:  # spread adapters not seen yet
                self._chosen[key] = random.randrange(self.count)
            return self._chosen[key]

    def move_on(self, key: str, failed: int) -> None:
        """`failed` gave a retryable answer for `key`: its next command tries the next one."""
        with self._lock:
            if self._chosen.get(key) == failed:
                self._chosen[key] = (failed + 1) % self.count


def replica_addresses(target: str) -> list[str]:
    """ "a:1,b:2" (or gRPC's "ipv4:a:1,b:2") -> ["a:1", "b:2"]; one name stays one target."""
    listed = target.removeprefix("ipv4:")
    return listed.split(",") if "," in listed else [target]


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)
