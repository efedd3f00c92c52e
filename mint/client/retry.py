"""How the registry clients retry, blocking or async alike: which statuses, how long to
pause, and which replica each adapter's commands go to.

Registry commands are retried here, not by a gRPC service-config retry policy: a policy
retries on the same channel, while a replica that does not own an adapter's partition
answers UNAVAILABLE, so a retry must move on to another replica (and, for a client-
streaming upload, start a new stream). Every retry sends the same request, request id
included, so the registry applies a command at most once and a retry learns the first
attempt's outcome. RESOURCE_EXHAUSTED is retried only when the server sends a pushback
(capacity in use right now: its transfer budgets, its watches), after that pause.
"""

from __future__ import annotations

import random
import threading
import time
import uuid

import grpc
from cachetools import LRUCache

# Trailing metadata of an UNAVAILABLE answer: the replica to retry at (mint.rpc.interceptor
# sends it).
OWNER_METADATA = "mint-owner"
# Trailing metadata of a RESOURCE_EXHAUSTED answer that may be retried (capacity in use
# now, not a size never accepted): how many ms to wait. gRPC's own name for it, which its
# retry policies honour too.
PUSHBACK_METADATA = "grpc-retry-pushback-ms"
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

    def next_pause(self, pushback: float = 0.0) -> float | None:
        """The pause before the next attempt, after a server's `pushback` (seconds it
        asked for, jitter added on top), or None: give up."""
        if time.monotonic() + pushback + self.delay > self.deadline:
            return None
        pause = pushback + self.delay * random.uniform(0.5, 1.5)
        self.delay = min(self.delay * 2, 2.0)
        return pause


class ReplicaChoice:
    """Which of the registry replicas at `addresses` each adapter's commands go to: the one
    that last took them. A replica answering retryably for an adapter moves that adapter
    to the replica it names as the owner (the `mint-owner` trailing metadata), if the
    client knows it, else on to the next, so retries meet the owner within one pass."""

    def __init__(self, addresses: list[str]) -> None:
        self.addresses, self.count = addresses, len(addresses)
        self._chosen: LRUCache[str, int] = LRUCache(maxsize=100_000)
        self._lock = threading.Lock()

    def choose(self, key: str) -> int:
        with self._lock:
            if key not in self._chosen:  # spread adapters not seen yet
                self._chosen[key] = random.randrange(self.count)
            return self._chosen[key]

    def move_on(self, key: str, failed: int, error: grpc.RpcError | None = None) -> bool:
        """`failed` gave a retryable `error` for `key`: its next command tries the owner
        the error names, or the next replica. True if it went to a named owner."""
        owner = owner_named(error) if error is not None else ""
        with self._lock:
            if owner in self.addresses and owner != self.addresses[failed]:
                self._chosen[key] = self.addresses.index(owner)
                return True
            if self._chosen.get(key) == failed:
                self._chosen[key] = (failed + 1) % self.count
            return False


class Attempts:
    """One call's tries of its command: which replica next, and how long to pause first.
    The blocking and the async client loop over it alike."""

    def __init__(self, replicas: ReplicaChoice, key: str, retry_for_s: float) -> None:
        self.replicas, self.key = replicas, key
        self.backoff, self.redirected = Backoff(retry_for_s), False

    def replica(self) -> int:
        return self.replicas.choose(self.key)

    def pause_after(self, failed: int, error: grpc.RpcError) -> float | None:
        """The pause before trying again after `failed` answered `error`; None: give up
        (not retryable, or out of time)."""
        moved = error.code() in RETRYABLE and self.replicas.move_on(self.key, failed, error)
        if moved and not self.redirected:
            self.redirected = True  # straight to the owner named, once per call
            return 0.0
        return pause_before_retry(error, self.backoff)


def pause_before_retry(error: grpc.RpcError, backoff: Backoff) -> float | None:
    """The pause before sending again after `error`; None: not retryable, or out of time.
    A RESOURCE_EXHAUSTED without a pushback is a limit no retry gets past."""
    if error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
        pushback = pushback_named(error)
        return None if pushback is None else backoff.next_pause(pushback)
    return backoff.next_pause() if error.code() in RETRYABLE else None


def owner_named(error: grpc.RpcError) -> str:
    """The registry replica an UNAVAILABLE answer says owns the adapter ("": none)."""
    return _trailing(error, OWNER_METADATA) or ""


def pushback_named(error: grpc.RpcError) -> float | None:
    """The seconds a RESOURCE_EXHAUSTED answer says to wait before retrying; None: it
    names none, so retrying will not help."""
    value = _trailing(error, PUSHBACK_METADATA)
    return int(value) / 1000 if value is not None and value.isdigit() else None


def _trailing(error: grpc.RpcError, key: str) -> str | None:
    trailing = getattr(error, "trailing_metadata", None)
    pairs = trailing() if callable(trailing) else None
    return next((str(v) for k, v in pairs or () if k == key), None)


def replica_addresses(target: str) -> list[str]:
    """ "a:1,b:2" (or gRPC's "ipv4:a:1,b:2") -> ["a:1", "b:2"]; one name stays one target."""
    listed = target.removeprefix("ipv4:")
    return listed.split(",") if "," in listed else [target]


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)
