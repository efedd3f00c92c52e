"""The one path every registry command takes: who asks, the stream's folded state, the
decision against it, the append, and the answer to a retry.

A stream's folded state is kept per stream (bounded), so a command reads and folds only
what is new since the last command on that stream. A retry of an applied request id
gets the first result and appends nothing; a request id names one command, so one sent
again with another command is refused. A command without an expected version that
loses a race to a concurrent one is decided again, after a jittered pause, for as long
as the caller's deadline leaves time (at most CONFLICTS_FOR_S).
"""

from __future__ import annotations

import dataclasses
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from mint.deadlines import time_left
from mint.domain import adapter as agg
from mint.domain import bounds
from mint.domain.errors import (
    DataLoss,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unavailable,
    VersionConflict,
)
from mint.domain.events import AdapterEvent, BaseModelRegistered
from mint.domain.names import AdapterRef
from mint.eventlog.port import AppendResult, EventLog, Metadata
from mint.tracing import current_trace_id

CONFLICT_PAUSE_S = (0.02, 0.5)  # first, longest
CONFLICTS_FOR_S = 10.0
MAX_REQUEST_ID = 256  # stored in every event's envelope, and indexed
FOLDED_CACHE_SIZE = 10_000  # adapters whose folded state a replica keeps decoded

Decide = Callable[[agg.Adapter | None], list[AdapterEvent]]
# Whether the events an earlier request appended are what this command appends: a retry.
Matches = Callable[[Sequence[AdapterEvent]], bool]


def recorded_as(event_type: type, /, **fields: object) -> Matches:
    """A command that appends an `event_type` with these fields first."""

    def matches(events: Sequence[AdapterEvent]) -> bool:
        first = events[0] if events else None
        return isinstance(first, event_type) and all(
            getattr(first, name) == value for name, value in fields.items()
        )

    return matches


@dataclass(frozen=True)
class Principal:
    """An authenticated caller and the tenants it may act in ("*": all). A `service` (the
    router) may act for the callers it names when it calls another MinT server; the
    `platform` principal (the evaluator worker) records the evaluations that gates
    requiring a platform evaluation accept."""

    name: str
    tenants: frozenset[str]
    admin: bool = False
    service: bool = False
    platform: bool = False

    def require_tenant(self, tenant: str) -> None:
        if "*" not in self.tenants and tenant not in self.tenants:
            raise PermissionDenied(
                f"principal {self.name!r} may not act in tenant {tenant!r}; "
                "use a token of that tenant"
            )


@dataclass(frozen=True)
class Outcome:
    adapter: agg.Adapter
    result: AppendResult


@dataclass(frozen=True)
class Folded:
    """A stream folded up to `version`: its state and which versions each request made."""

    version: int
    last_event_id: str
    state: agg.Adapter
    requests: Mapping[str, tuple[int, int]]  # request id -> (first, last) version


class CommandPath:
    def __init__(self, log: EventLog) -> None:
        self.log = log
        self._folded: dict[str, Folded] = {}  # most recently used last
        self._folded_lock = threading.Lock()

    def load(self, stream_id: str) -> Folded | None:
        """The stream's folded state, from the log's (a snapshot's events, or the history),
        folded once per version and kept in a bounded cache."""
        current = self.log.read_state(stream_id)
        if current is None:
            return None
        cached = self._folded.get(stream_id)
        if (
            cached is not None
            and cached.version == current.version
            and cached.last_event_id == current.last_event_id
        ):
            return cached
        events = [e for e in current.events if not isinstance(e, BaseModelRegistered)]
        try:
            state = agg.fold(events)
        except ValueError as exc:  # events no registry wrote (it folds what it appends)
            raise DataLoss(
                f"{stream_id}'s events do not fold ({exc}): the log holds events no registry "
                "wrote; run `python -m mint.audit verify` and tell the operator"
            ) from exc
        if state is None:
            return None
        state = dataclasses.replace(state, version=current.version)
        folded = Folded(current.version, current.last_event_id, state, current.requests)
        with self._folded_lock:  # the oldest goes first
            self._folded.pop(stream_id, None)
            self._folded[stream_id] = folded
            if len(self._folded) > FOLDED_CACHE_SIZE:
                del self._folded[next(iter(self._folded))]
        return folded

    def check(self, principal: Principal, ref: AdapterRef, request_id: str) -> None:
        """What refuses a command before any of its work (an upload received, a stream
        read): the caller's tenant, a request id, and that this replica writes `ref`."""
        principal.require_tenant(ref.tenant)
        if not request_id:
            raise InvalidArgument("request_id is required, so that retries are safe")
        bounds.text("request_id", request_id, MAX_REQUEST_ID)
        self.log.check_writable(str(ref))  # another replica's: say so before any work

    def execute(
        self,
        principal: Principal,
        ref: AdapterRef,
        expected_version: int | None,
        request_id: str,
        decide: Decide,
        matches: Matches,
        allow_new: bool = False,
    ) -> Outcome:
        """Append what `decide` makes of the stream's state; a retry of `request_id`
        (`matches` the events it appended) gets its first result."""
        self.check(principal, ref, request_id)
        pause, longest = CONFLICT_PAUSE_S
        give_up = time.monotonic() + time_left(CONFLICTS_FOR_S)
        while True:
            try:
                return self._execute_once(
                    principal, ref, expected_version, request_id, decide, matches, allow_new
                )
            except VersionConflict:
                if expected_version is not None:
                    raise  # the caller asked for this exact version: theirs to resolve
            # Another command got in first, or this replica is still reading what the
            # last owner of the partition wrote: either passes, so the caller may retry.
            sleep = pause * random.uniform(0.5, 1.5)
            if time.monotonic() + sleep > give_up:
                raise Unavailable(
                    f"{ref} kept changing under concurrent commands; retry with the same request id"
                )
            time.sleep(sleep)
            pause = min(pause * 2, longest)

    def _execute_once(
        self,
        principal: Principal,
        ref: AdapterRef,
        expected_version: int | None,
        request_id: str,
        decide: Decide,
        matches: Matches,
        allow_new: bool,
    ) -> Outcome:
        folded = self.load(str(ref))
        state = folded.state if folded else None
        earlier = folded.requests.get(request_id) if folded else None
        if earlier:  # a retry: the first result, nothing new
            self._refuse_another_command(ref, request_id, earlier, matches)
            first = state if state and earlier[1] == state.version else self._as_of(ref, earlier[1])
            if first is None:
                raise DataLoss(f"{ref}'s log no longer holds the events of request {request_id}")
            return Outcome(first, AppendResult(str(ref), earlier[0], earlier[1], True))
        if state is None and not allow_new:
            raise NotFound(f"adapter {ref} does not exist")
        current = state.version if state else 0
        if expected_version is not None and expected_version != current:
            raise VersionConflict(
                f"{ref} is at version {current}, not {expected_version}: re-read it and retry"
            )
        events = decide(state)
        if not events and state is not None:  # nothing to do (erasing an erased adapter)
            return Outcome(state, AppendResult(str(ref), state.version, state.version, True))
        result = self.log.append(str(ref), current, events, metadata(principal, request_id))
        if result.duplicate:  # appended by an earlier try of this request meanwhile
            folded = self.load(str(ref))
            return Outcome(existing(folded.state if folded else None), result)
        return Outcome(existing(_fold_onto(state, events)), result)

    def _refuse_another_command(
        self, ref: AdapterRef, request_id: str, versions: tuple[int, int], matches: Matches
    ) -> None:
        """InvalidArgument unless the events `request_id` appended are this command's."""
        first, last = versions
        recorded = self.log.read_stream(str(ref), after_version=first - 1)[: last - first + 1]
        events = [r.event for r in recorded]
        if not matches(events):  # type: ignore[arg-type]  # a stream holds adapter events
            made = ", ".join(type(e).__name__ for e in events) or "nothing"
            raise InvalidArgument(
                f"request id {request_id!r} was already used on {ref} by another command "
                f"(it appended {made}): a request id names one command, so send this "
                "one with a new request id"
            )

    def _as_of(self, ref: AdapterRef, version: int) -> agg.Adapter | None:
        """The adapter's state at `version`, from its history."""
        recorded = self.log.read_stream(str(ref))[:version]
        return agg.fold(r.event for r in recorded)  # type: ignore[misc]


def _fold_onto(state: agg.Adapter | None, events: list[AdapterEvent]) -> agg.Adapter | None:
    for event in events:
        state = agg.apply(state, event)
    return state


def existing(state: agg.Adapter | None) -> agg.Adapter:
    """`state`, which a command's decision needs to exist (execute checks first unless a
    command may create it; this guards the type)."""
    if state is None:
        raise NotFound("adapter does not exist")
    return state


def metadata(principal: Principal, request_id: str) -> Metadata:
    """Who asked and in which request; the trace it ran in, when RPCs are traced."""
    return Metadata(principal.name, request_id, correlation_id=current_trace_id() or "")
