"""The registry's application layer: authorize, validate, decide, store blob, append.

Transport-free (the gRPC servicer in services/registry is a thin shell over it) and
back-end-free (any EventLog and BlobStore). For every command the order is:
  1. a retry of an already-applied request id returns the first result, nothing new;
  2. authorization and every input check, before anything is written;
  3. the blob is stored (content-addressed) and only then the event that points to it.
Steps 1 and the append, with retries under concurrent commands, are mint/commands.py.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from mint.blobs.port import BlobRef, BlobStore, checked_ref
from mint.catalog.log_scan import LogScanCatalog
from mint.catalog.port import AdapterCatalog, Page
from mint.commands import (
    CommandPath,
    Folded,
    Outcome,
    Principal,
    existing,
    metadata,
    recorded_as,
)
from mint.domain import adapter as agg
from mint.domain import events as ev
from mint.domain import gates, names
from mint.domain.errors import (
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unavailable,
    VersionConflict,
)
from mint.domain.events import AdapterEvent, BaseModelRegistered, Provenance
from mint.domain.names import AdapterRef, adapter_name
from mint.domain.names import tenant as tenant_name
from mint.eventlog.port import EventLog, Recorded
from mint.serving.erasures import ErasureNotice, ErasureNotices
from mint.validation.adapter import validate_adapter
from mint.validation.examples import parse_examples
from mint.validation.limits import Limits

__all__ = ["Outcome", "Principal", "Registry", "Upload"]  # Outcome, Principal: commands.py

log = logging.getLogger(__name__)

BASE_STREAM_PREFIX = "base:"
# An erasure begun this long ago whose tombstone is still not in the log never will be
# (an append waits at most the caller's deadline): the sweep forgets it.
ABANDON_ERASURE_AFTER_S = 600.0


@dataclass(frozen=True)
class Upload:
    config: bytes  # adapter_config.json
    weights: bytes  # adapter_model.safetensors
    declared_sha256: str | None = None  # the client's digest of `weights`, checked


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
        self.commands = CommandPath(log)
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
        names.fingerprint(fingerprint)
        if not parameters:
            raise InvalidArgument("a base model needs its parameter shapes")
        existing = self._base_or_none(fingerprint)
        if existing is not None:
            return existing
        self.log.check_writable(base_stream(fingerprint))
        event = BaseModelRegistered(name, fingerprint, dict(parameters))
        meta = metadata(principal, request_id)
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
        self.base(names.fingerprint(base_fingerprint))
        adapter_id = uuid.uuid4().hex  # issued once; a retry returns the first one
        # No expected version: a taken name is the domain's AlreadyExists, not a version
        # conflict; two creates racing conflict in the append, and the loser then sees
        # the name taken.
        return self.commands.execute(
            principal,
            ref,
            None,
            request_id,
            lambda state: agg.create(
                state, adapter_id, ref, principal.name, base_fingerprint, method, labels
            ),
            recorded_as(ev.AdapterCreated, base_fingerprint=base_fingerprint, method=method),
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
            agg.check_publishable(state, provenance, tuple(parents))  # before any upload work
            base = self.base(state.created.base_fingerprint)
            checked = validate_adapter(upload.config, upload.weights, base.parameters, self.limits)
            blob = self._store_blob(state, upload.weights, upload.declared_sha256)  # blob first
            return agg.publish(
                state, blob.sha256, blob.size, checked.config_json, provenance, tuple(parents)
            )

        def matches(events: Sequence[AdapterEvent]) -> bool:
            sha256 = upload.declared_sha256 or checked_ref(upload.weights, None).sha256
            return recorded_as(ev.RevisionPublished, weights_sha256=sha256)(events)

        return self.commands.execute(principal, ref, expected_version, request_id, decide, matches)

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
        return self.commands.execute(
            principal,
            ref,
            expected_version,
            request_id,
            lambda s: agg.record_evaluation(
                existing(s),
                revision,
                suite,
                metrics,
                dataset_fingerprint,
                principal.name,
                passed,
                principal.platform,
            ),
            # An evaluator run again may score a little differently: the first verdict holds.
            recorded_as(ev.EvaluationRecorded, revision=revision, suite=suite),
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
                existing(state), channel, required_suite, requirement, threshold, digest
            )
            if examples:
                gates.parse_examples(examples)
                self._store_blob(existing(state), examples, digest)  # blob first
            return events

        matches = recorded_as(ev.ChannelGateSet, channel=channel, required_suite=required_suite)
        return self.commands.execute(principal, ref, expected_version, request_id, decide, matches)

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
        return self.commands.execute(
            principal,
            ref,
            expected_version,
            request_id,
            lambda s: agg.move_channel(existing(s), channel, revision, reason, principal.name),
            recorded_as(ev.ChannelMoved, channel=channel, revision=revision),
        )

    def archive(
        self,
        principal: Principal,
        ref: AdapterRef,
        reason: str,
        request_id: str,
        expected_version: int | None = None,
    ) -> Outcome:
        return self.commands.execute(
            principal,
            ref,
            expected_version,
            request_id,
            lambda s: agg.archive(existing(s), reason),
            recorded_as(ev.AdapterArchived),
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
                existing(state), request_id, kind, parsed.sha256, len(examples), channel
            )
            self._store_blob(existing(state), examples, parsed.sha256)  # checks passed: blob first
            return events

        matches = recorded_as(ev.UpdateRequested, kind=kind, channel=channel)
        return self.commands.execute(principal, ref, None, request_id, decide, matches)

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
        return self.commands.execute(
            principal,
            ref,
            None,
            request_id,
            lambda s: agg.finish_update(existing(s), update_id, revision, outcome, reason),
            # A trainer run again may come to another outcome (a gate passed since): the
            # first is the update's.
            recorded_as(ev.UpdateFinished, update_id=update_id),
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
        folded = self.commands.load(str(ref))
        if folded is None:
            raise NotFound(f"adapter {ref} does not exist")
        if _erasure_may_begin(folded, request_id, expected_version):
            self.blobs.begin_erasure(folded.state.adapter_id, str(ref))
        erased_at = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
        outcome = self.commands.execute(
            principal,
            ref,
            expected_version,
            request_id,
            lambda s: agg.erase(existing(s), erased_at),
            recorded_as(ev.AdapterErased),
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
                folded = self.commands.load(pending.stream)
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
        folded = self.commands.load(str(ref))
        state = folded.state if folded else None
        if state is None:
            raise NotFound(f"adapter {ref} does not exist")
        return state

    def weights(self, principal: Principal, ref: AdapterRef, at: int | str) -> bytes:
        """The weights of revision `at` (a number, or a channel's revision), checked
        against their recorded sha256."""
        return self.weights_of(*self.revision_at(principal, ref, at))

    def revision_at(
        self, principal: Principal, ref: AdapterRef, at: int | str
    ) -> tuple[agg.Adapter, agg.Revision]:
        """Revision `at` of `ref` (a number, or a channel's revision), whose weights may be
        read: the adapter is not erased."""
        adapter = self.get(principal, ref)
        adapter.check_not_erased()
        return adapter, adapter.resolve(at) if isinstance(at, str) else adapter.revision(at)

    def weights_of(self, adapter: agg.Adapter, revision: agg.Revision) -> bytes:
        """`revision`'s weights (from `revision_at`), checked against their sha256."""
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
        tenant_name(tenant)
        principal.require_tenant(tenant)
        if after is not None:
            adapter_name(after)
        if limit < 1:
            raise InvalidArgument(f"a page holds at least one adapter, not {limit}")
        return self.catalog.page(tenant, after, dict(labels or {}), limit)

    def check_command(self, principal: Principal, ref: AdapterRef, request_id: str) -> None:
        """What refuses a command before any of its work (an upload received, a stream
        read): the caller's tenant, a request id, and that this replica writes `ref`."""
        self.commands.check(principal, ref, request_id)


def _erasure_may_begin(folded: Folded, request_id: str, expected_version: int | None) -> bool:
    """Whether an erase notes its erasure before its event: not when the adapter is erased
    already, the request id was used (a retry, or another command, which is refused) or
    the expected version is stale (refused), so that a refused erase leaves nothing."""
    return (
        not folded.state.erased
        and request_id not in folded.requests
        and expected_version in (None, folded.version)
    )
