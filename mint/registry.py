"""The registry's application layer: authorize, validate, decide, store blob, append.

Transport-free (the gRPC servicer in services/registry is a thin shell over it) and
back-end-free (any EventLog and BlobStore). For every command the order is:
  1. a retry of an already-applied request id returns the first result, nothing new;
  2. authorization and every input check, before anything is written;
  3. the blob is stored (content-addressed) and only then the event that points to it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import random
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from mint.blobs.port import BlobRef, BlobStore, checked_ref
from mint.catalog.log_scan import LogScanCatalog
from mint.catalog.port import AdapterCatalog, Page
from mint.deadlines import time_left
from mint.domain import adapter as agg
from mint.domain import gates
from mint.domain.errors import (
    DataLoss,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unavailable,
    VersionConflict,
)
from mint.domain.events import AdapterEvent, BaseModelRegistered, Provenance
from mint.domain.names import AdapterRef, adapter_name
from mint.domain.names import tenant as tenant_name
from mint.eventlog.port import AppendResult, EventLog, Metadata, Recorded
from mint.serving.erasures import ErasureNotice, ErasureNotices
from mint.tracing import current_trace_id
from mint.validation.adapter import validate_adapter
from mint.validation.examples import parse_examples
from mint.validation.limits import Limits

log = logging.getLogger(__name__)

BASE_STREAM_PREFIX = "base:"
# Commands without an expected version lose races only to each other; retry those here.
# A command without an expected version that meets a concurrent one is decided again,
# after a jittered pause, for as long as the caller's deadline leaves time (at most
# CONFLICTS_FOR_S).
CONFLICT_PAUSE_S = (0.02, 0.5)  # first, longest
CONFLICTS_FOR_S = 10.0
FOLDED_CACHE_SIZE = 10_000  # adapters whose folded state a replica keeps decoded
# An erasure begun this long ago whose tombstone is still not in the log never will be
# (an append waits at most the caller's deadline): the sweep forgets it.
ABANDON_ERASURE_AFTER_S = 600.0


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
class Upload:
    config: bytes  # adapter_config.json
    weights: bytes  # adapter_model.safetensors
    declared_sha256: str | None = None  # the client's digest of `weights`, checked


@dataclass(frozen=True)
class Outcome:
    adapter: agg.Adapter
    result: AppendResult


@dataclass(frozen=True)
class _Folded:
    """A stream folded up to `version`: its state and which versions each request made."""

    version: int
    last_event_id: str
    state: agg.Adapter
    requests: Mapping[str, tuple[int, int]]  # request id -> (first, last) version


def base_stream(fingerprint: str) -> str:
    return BASE_STREAM_PREFIX + fingerprint


class Registry:
    def __init__(
        self,
        log: EventLog,
        blobs: BlobStore,
        limits: Limits | None = None,
        catalog: AdapterCatalog | None = None,
        notices: ErasureNotices | None = None,
    ) -> None:
        """`catalog` serves lists (the projection's, with the Kafka back end); without
        one, each page scans the whole log. `notices` tells the serving side of erasures
        (nodes drop the adapter); the embedded back end serves from no node."""
        self.log, self.blobs, self.limits = log, blobs, limits or Limits()
        self.notices = notices
        self.catalog = catalog or LogScanCatalog(log)
        # stream -> its folded state: commands read and fold only what is new since the
        # last command on that stream, not the whole history each time.
        self._folded: dict[str, _Folded] = {}
        self._folded_lock = threading.Lock()
        # Bases are registered once and never change: a command on any partition needs
        # its base, which should not cost a read of the partition the base lives on.
        self._bases: dict[str, BaseModelRegistered] = {}

    # ---- base models ---------------------------------------------------------------

    def register_base(
        self,
        principal: Principal,
        name: str,
        fingerprint: str,
        parameters: Mapping[str, tuple[int, ...]],
        request_id: str,
    ) -> BaseModelRegistered:
        """Idempotent by fingerprint: registering the same base again returns the first."""
        if not principal.admin:
            raise PermissionDenied(f"principal {principal.name!r} may not register base models")
        if len(fingerprint) != 64 or not all(c in "0123456789abcdef" for c in fingerprint):
            raise InvalidArgument(f"base fingerprint must be 64 hex digits, got {fingerprint!r}")
        if not parameters:
            raise InvalidArgument("a base model needs its parameter shapes")
        existing = self._base_or_none(fingerprint)
        if existing is not None:
            return existing
        self.log.check_writable(base_stream(fingerprint))
        event = BaseModelRegistered(name, fingerprint, dict(parameters))
        meta = _metadata(principal, request_id)
        with contextlib.suppress(VersionConflict):  # registered concurrently: first wins
            self.log.append(base_stream(fingerprint), 0, [event], meta)
        return self.base(fingerprint)

    def base(self, fingerprint: str) -> BaseModelRegistered:
        found = self._base_or_none(fingerprint)
        if found is None:
            raise NotFound(f"no base model with fingerprint {fingerprint}: register it first")
        return found

    def _base_or_none(self, fingerprint: str) -> BaseModelRegistered | None:
        if fingerprint in self._bases:  # registered once, never changed
            return self._bases[fingerprint]
        recorded = self.log.read_stream(base_stream(fingerprint))
        event = recorded[0].event if recorded else None
        if not isinstance(event, BaseModelRegistered):
            return None
        self._bases[fingerprint] = event
        return event

    # ---- adapters ------------------------------------------------------------------

    def create_adapter(
        self,
        principal: Principal,
        ref: AdapterRef,
        base_fingerprint: str,
        request_id: str,
        method: str = "lora",
        labels: Mapping[str, str] | None = None,
    ) -> Outcome:
        principal.require_tenant(ref.tenant)
        self.base(base_fingerprint)
        adapter_id = uuid.uuid4().hex  # issued once; a retry returns the first one
        # No expected version: a taken name is the domain's AlreadyExists, not a version
        # conflict; two creates racing conflict in the append, and the loser then sees
        # the name taken.
        return self._execute(
            principal,
            ref,
            None,
            request_id,
            lambda state: agg.create(
                state, adapter_id, ref, principal.name, base_fingerprint, method, labels
            ),
            allow_new=True,
        )

    def publish_revision(
        self,
        principal: Principal,
        ref: AdapterRef,
        upload: Upload,
        request_id: str,
        expected_version: int | None = None,
        parents: Sequence[int] = (),
        training_run_id: str = "",
        dataset_fingerprints: Sequence[str] = (),
        hyperparameters: Mapping[str, str] | None = None,
        tool_versions: Mapping[str, str] | None = None,
    ) -> Outcome:
        provenance = Provenance(
            principal.name,
            training_run_id,
            tuple(dataset_fingerprints),
            dict(hyperparameters or {}),
            dict(tool_versions or {}),
        )

        def decide(state: agg.Adapter | None) -> list[AdapterEvent]:
            if state is None:
                raise NotFound(f"adapter {ref} does not exist")
            state.check_not_erased()  # before the upload is checked and stored
            base = self.base(state.created.base_fingerprint)
            checked = validate_adapter(upload.config, upload.weights, base.parameters, self.limits)
            blob = self._store_blob(state, upload.weights, upload.declared_sha256)  # blob first
            return agg.publish(
                state, blob.sha256, blob.size, checked.config_json, provenance, tuple(parents)
            )

        return self._execute(principal, ref, expected_version, request_id, decide)

    def record_evaluation(
        self,
        principal: Principal,
        ref: AdapterRef,
        revision: int,
        suite: str,
        metrics: Mapping[str, float],
        passed: bool,
        request_id: str,
        dataset_fingerprint: str = "",
        expected_version: int | None = None,
    ) -> Outcome:
        return self._execute(
            principal,
            ref,
            expected_version,
            request_id,
            lambda s: agg.record_evaluation(
                _exists(s),
                revision,
                suite,
                metrics,
                dataset_fingerprint,
                principal.name,
                passed,
                principal.platform,
            ),
        )

    def set_gate(
        self,
        principal: Principal,
        ref: AdapterRef,
        channel: str,
        required_suite: str,
        request_id: str,
        expected_version: int | None = None,
        requirement: str = gates.ANY,
        threshold: float = 0.0,
        examples: bytes = b"",
    ) -> Outcome:
        """A platform gate's `examples` (JSON lines) are checked, then stored as a blob
        the event names by sha256."""

        def decide(state: agg.Adapter | None) -> list[AdapterEvent]:
            digest = checked_ref(examples, None).sha256 if examples else ""
            events = agg.set_gate(
                _exists(state), channel, required_suite, requirement, threshold, digest
            )
            if examples:
                gates.parse_examples(examples)
                self._store_blob(_exists(state), examples, digest)  # blob first
            return events

        return self._execute(principal, ref, expected_version, request_id, decide)

    def move_channel(
        self,
        principal: Principal,
        ref: AdapterRef,
        channel: str,
        revision: int,
        request_id: str,
        reason: str = "",
        expected_version: int | None = None,
    ) -> Outcome:
        return self._execute(
            principal,
            ref,
            expected_version,
            request_id,
            lambda s: agg.move_channel(_exists(s), channel, revision, reason, principal.name),
        )

    def archive(
        self,
        principal: Principal,
        ref: AdapterRef,
        reason: str,
        request_id: str,
        expected_version: int | None = None,
    ) -> Outcome:
        return self._execute(
            principal, ref, expected_version, request_id, lambda s: agg.archive(_exists(s), reason)
        )

    def request_update(
        self,
        principal: Principal,
        ref: AdapterRef,
        examples: bytes,
        request_id: str,
        kind: str = "examples",
        channel: str = "stable",
    ) -> Outcome:
        """Store the examples (content-addressed, after every check) and append the
        request; `request_id` is the update's id, which the trainer's stages name."""

        def decide(state: agg.Adapter | None) -> list[AdapterEvent]:
            parsed = parse_examples(examples, kind)
            events = agg.request_update(
                _exists(state), request_id, kind, parsed.sha256, len(examples), channel
            )
            self._store_blob(_exists(state), examples, parsed.sha256)  # checks passed: blob first
            return events

        return self._execute(principal, ref, None, request_id, decide)

    def finish_update(
        self,
        principal: Principal,
        ref: AdapterRef,
        update_id: str,
        revision: int,
        outcome: str,
        request_id: str,
        reason: str = "",
    ) -> Outcome:
        """The trainer's last stage of an update (a service's or an admin's call)."""
        if not (principal.service or principal.admin):
            raise PermissionDenied(
                f"principal {principal.name!r} may not finish updates: the trainer does, "
                "with a service token"
            )
        return self._execute(
            principal,
            ref,
            None,
            request_id,
            lambda s: agg.finish_update(_exists(s), update_id, revision, outcome, reason),
        )

    def _store_blob(self, state: agg.Adapter, data: bytes, expected_sha256: str | None) -> BlobRef:
        """Store one of the adapter's blobs that an event of this command is about to
        reference, unless the blob collector is deleting it (mint/blobs/collector.py: from
        this check the command must append within the collector's lease, which its
        deadline ensures). An erased adapter stores nothing."""
        state.check_not_erased()
        adapter_id = state.adapter_id
        blob = self.blobs.put(adapter_id, data, expected_sha256)
        if self.blobs.marked(adapter_id, blob.sha256):
            raise Unavailable(
                f"blob {blob.sha256} is being collected as unreferenced; retry with the same "
                "request id in a few minutes (it is stored again then)"
            )
        if not self.blobs.exists(adapter_id, blob.sha256):  # collected since the put
            self.blobs.put(adapter_id, data, blob.sha256)
        return blob

    def erase(
        self,
        principal: Principal,
        ref: AdapterRef,
        request_id: str,
        expected_version: int | None = None,
    ) -> Outcome:
        """Erase for good: the tombstone is appended, then the adapter's data key is
        destroyed and its blobs deleted (the projector deletes its projection, nodes drop
        it). The erasure is noted in the blob store before the event, so one interrupted
        after the event is finished by `finish_erasures`; erasing again finishes it too."""
        self.check_command(principal, ref, request_id)
        folded = self._load(str(ref))
        if folded is None:
            raise NotFound(f"adapter {ref} does not exist")
        if not folded.state.erased:
            self.blobs.begin_erasure(folded.state.adapter_id, str(ref))
        erased_at = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
        outcome = self._execute(
            principal,
            ref,
            expected_version,
            request_id,
            lambda s: agg.erase(_exists(s), erased_at),
        )
        if outcome.adapter.erased:
            self._finish_erasure(outcome.adapter)
        return outcome

    def _finish_erasure(self, state: agg.Adapter) -> None:
        """What follows the tombstone; each step idempotent, the pending note last."""
        if self.notices is not None:
            self.notices.announce(
                ErasureNotice(
                    state.adapter_id,
                    str(state.ref),
                    state.erased_at,
                    tuple(sorted({r.weights_sha256 for r in state.revisions})),
                )
            )
        self.blobs.erase(state.adapter_id)

    def finish_erasures(self) -> int:
        """Finish the erasures begun on adapters this replica writes whose tombstone is
        in the log (a crash came between the event and destroying the key); forget those
        whose tombstone never landed. Reads only the pending ones' states (snapshots on
        the owner), never the log at large. How many it finished."""
        finished = 0
        for pending in self.blobs.pending_erasures():
            try:
                self.log.check_writable(pending.stream)
                folded = self._load(pending.stream)
            except (Unavailable, InvalidArgument):
                continue  # another replica's (it sweeps), or a note only `erase` can finish
            state = folded.state if folded else None
            if state is not None and state.adapter_id != pending.adapter_id:
                state = None  # cannot be: adapter ids are issued once per stream
            if state is not None and state.erased:
                self._finish_erasure(state)
                finished += 1
                log.info("finished the erasure of %s (%s)", pending.stream, pending.adapter_id)
            elif time.time() - pending.began_at > ABANDON_ERASURE_AFTER_S:
                self.blobs.abandon_erasure(pending.adapter_id)
        return finished

    # ---- queries -------------------------------------------------------------------

    def read_elsewhere(self, principal: Principal, ref: AdapterRef) -> str:
        """The replica to read `ref` at, when it is not this one ("": read here)."""
        principal.require_tenant(ref.tenant)  # no hints about other tenants' adapters
        return self.log.writer_elsewhere(str(ref))

    def get(self, principal: Principal, ref: AdapterRef) -> agg.Adapter:
        principal.require_tenant(ref.tenant)
        folded = self._load(str(ref))
        state = folded.state if folded else None
        if state is None:
            raise NotFound(f"adapter {ref} does not exist")
        return state

    def weights(self, principal: Principal, ref: AdapterRef, at: int | str) -> bytes:
        """The weights of revision `at` (a number, or a channel's revision), checked
        against their recorded sha256."""
        adapter = self.get(principal, ref)
        adapter.check_not_erased()
        revision = adapter.resolve(at) if isinstance(at, str) else adapter.revision(at)
        return self.blobs.get(adapter.adapter_id, revision.weights_sha256)

    def history(self, principal: Principal, ref: AdapterRef) -> list[Recorded]:
        principal.require_tenant(ref.tenant)
        recorded = self.log.read_stream(str(ref))
        if not recorded:
            raise NotFound(f"adapter {ref} does not exist")
        return recorded

    def list_adapters(
        self,
        principal: Principal,
        tenant: str,
        labels: Mapping[str, str] | None = None,
        after: str | None = None,
        limit: int = 100,
    ) -> Page:
        """A page of `tenant`'s adapters (archived ones too) in name order, after the name
        `after`, carrying every label in `labels`: see mint/catalog/port.py."""
        principal.require_tenant(tenant)
        tenant_name(tenant)
        if after is not None:
            adapter_name(after)
        if limit < 1:
            raise InvalidArgument(f"a page holds at least one adapter, not {limit}")
        return self.catalog.page(tenant, after, dict(labels or {}), limit)

    # ---- the one command path --------------------------------------------------------

    def _load(self, stream_id: str) -> _Folded | None:
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
        state = agg.fold(events)
        if state is None:
            return None
        state = dataclasses.replace(state, version=current.version)
        folded = _Folded(current.version, current.last_event_id, state, current.requests)
        with self._folded_lock:  # most recently used last; the oldest goes first
            self._folded.pop(stream_id, None)
            self._folded[stream_id] = folded
            if len(self._folded) > FOLDED_CACHE_SIZE:
                del self._folded[next(iter(self._folded))]
        return folded

    def _as_of(self, ref: AdapterRef, version: int) -> agg.Adapter | None:
        """The adapter's state at `version`, from its history."""
        recorded = self.log.read_stream(str(ref))[:version]
        return agg.fold(r.event for r in recorded)  # type: ignore[misc]

    def check_command(self, principal: Principal, ref: AdapterRef, request_id: str) -> None:
        """What refuses a command before any of its work (an upload received, a stream
        read): the caller's tenant, a request id, and that this replica writes `ref`."""
        principal.require_tenant(ref.tenant)
        if not request_id:
            raise InvalidArgument("request_id is required, so that retries are safe")
        self.log.check_writable(str(ref))  # another replica's: say so before any work

    def _execute(
        self,
        principal: Principal,
        ref: AdapterRef,
        expected_version: int | None,
        request_id: str,
        decide: Callable[[agg.Adapter | None], list[AdapterEvent]],
        allow_new: bool = False,
    ) -> Outcome:
        self.check_command(principal, ref, request_id)
        pause, longest = CONFLICT_PAUSE_S
        give_up = time.monotonic() + time_left(CONFLICTS_FOR_S)
        while True:
            try:
                return self._execute_once(
                    principal, ref, expected_version, request_id, decide, allow_new
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
        decide: Callable[[agg.Adapter | None], list[AdapterEvent]],
        allow_new: bool,
    ) -> Outcome:
        folded = self._load(str(ref))
        state = folded.state if folded else None
        earlier = folded.requests.get(request_id) if folded else None
        if earlier:  # a retry: the first result, nothing new
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
        result = self.log.append(str(ref), current, events, _metadata(principal, request_id))
        if result.duplicate:  # appended by an earlier try of this request meanwhile
            folded = self._load(str(ref))
            return Outcome(_exists(folded.state if folded else None), result)
        return Outcome(_exists(_fold_onto(state, events)), result)


def _fold_onto(state: agg.Adapter | None, events: list[AdapterEvent]) -> agg.Adapter | None:
    for event in events:
        state = agg.apply(state, event)
    return state


def _exists(state: agg.Adapter | None) -> agg.Adapter:
    if state is None:  # _execute and get check first; this guards the type
        raise NotFound("adapter does not exist")
    return state


def _metadata(principal: Principal, request_id: str) -> Metadata:
    """Who asked and in which request; the trace it ran in, when RPCs are traced."""
    return Metadata(principal.name, request_id, correlation_id=current_trace_id() or "")
