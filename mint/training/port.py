"""What the update loop needs from the registry, and the in-process implementation.

Every command carries a request id derived from the update's id and the stage, so a
stage done again after a crash or a redelivery appends nothing new (the registry's
idempotency); the adapter's state says which stages are done.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from mint.domain import adapter as agg
from mint.domain.events import EvaluationRecorded, Provenance, UpdateRequested
from mint.domain.names import AdapterRef
from mint.eventlog import codec
from mint.eventlog.port import Recorded
from mint.registry import Principal, Registry, Upload


@dataclass(frozen=True)
class UpdateJob:
    """An update request as the log delivered it."""

    ref: AdapterRef
    request: UpdateRequested
    position: str  # where the request sits in the log ("partition:offset")

    @property
    def run_id(self) -> str:
        """The training run's id in the revision's provenance: names the exact request."""
        return f"update-{self.request.update_id}@{self.position}"

    def stage_request_id(self, stage: str) -> str:
        return f"update-{self.request.update_id}-{stage}"


UPDATE_REQUESTED = codec.SCHEMAS[UpdateRequested][0].DESCRIPTOR.full_name


def job_of(recorded: Recorded) -> UpdateJob | None:
    """The update request `recorded` holds, if it is one. Other events are not decoded:
    one of a type newer than this trainer is not its business."""
    if recorded.envelope.event_type != UPDATE_REQUESTED:
        return None
    if not isinstance(recorded.event, UpdateRequested):  # for the type checker
        return None
    position = f"{recorded.position.partition}:{recorded.position.offset}"
    return UpdateJob(AdapterRef.parse(recorded.envelope.stream_id), recorded.event, position)


class Published(Protocol):
    """A revision as the domain's aggregate and the client's `Revision` both hold it."""

    @property
    def number(self) -> int: ...
    @property
    def weights_sha256(self) -> str: ...
    @property
    def config_json(self) -> str: ...
    @property
    def parents(self) -> tuple[int, ...]: ...
    @property
    def provenance(self) -> Provenance: ...
    @property
    def evaluations(self) -> tuple[EvaluationRecorded, ...]: ...


@dataclass(frozen=True)
class RevisionView:
    number: int
    weights_sha256: str
    config_json: str
    parents: tuple[int, ...]
    training_run_id: str
    evaluations: Mapping[str, tuple[bool, Mapping[str, float]]]  # suite -> the last verdict

    @classmethod
    def of(cls, revision: Published) -> RevisionView:
        return cls(
            revision.number,
            revision.weights_sha256,
            revision.config_json,
            revision.parents,
            revision.provenance.training_run_id,
            {e.suite: (e.passed, e.metrics) for e in revision.evaluations},
        )


@dataclass(frozen=True)
class AdapterView:
    """The parts of an adapter's state the loop reads."""

    adapter_id: str
    base_fingerprint: str
    revisions: tuple[RevisionView, ...]
    channels: Mapping[str, int] = field(default_factory=dict)
    archived: bool = False
    erased: bool = False

    def made_by(self, run_id: str) -> RevisionView | None:
        """The revision a training run published, if it did."""
        return next((r for r in self.revisions if r.training_run_id == run_id), None)

    def latest(self) -> RevisionView | None:
        number = self.channels.get(agg.LATEST)
        return self.revisions[number - 1] if number else None

    def parent_of(self, revision: RevisionView) -> RevisionView | None:
        return self.revisions[revision.parents[0] - 1] if revision.parents else None


class UpdateRegistry(Protocol):
    """Commands raise the domain's errors (FailedPrecondition when a gate refuses)."""

    def view(self, ref: AdapterRef) -> AdapterView: ...

    def publish(
        self,
        ref: AdapterRef,
        upload: Upload,
        parents: tuple[int, ...],
        provenance: Provenance,
        request_id: str,
    ) -> int:
        """The new revision's number (the first one's, for a retry)."""
        ...

    def record_evaluation(
        self,
        ref: AdapterRef,
        revision: int,
        suite: str,
        metrics: Mapping[str, float],
        passed: bool,
        dataset_fingerprint: str,
        request_id: str,
    ) -> None: ...

    def promote(
        self, ref: AdapterRef, channel: str, revision: int, reason: str, request_id: str
    ) -> None: ...

    def finish(
        self,
        ref: AdapterRef,
        update_id: str,
        revision: int,
        outcome: str,
        reason: str,
        request_id: str,
    ) -> None: ...


def view_of(state: agg.Adapter) -> AdapterView:
    return AdapterView(
        state.adapter_id,
        state.created.base_fingerprint,
        tuple(RevisionView.of(r) for r in state.revisions),
        dict(state.channels),
        state.archived,
        state.erased,
    )


class LocalRegistry:
    """The registry in this process (the embedded demo), acting as `principal`."""

    def __init__(self, registry: Registry, principal: Principal) -> None:
        self.registry, self.principal = registry, principal

    def view(self, ref: AdapterRef) -> AdapterView:
        return view_of(self.registry.get(self.principal, ref))

    def publish(
        self,
        ref: AdapterRef,
        upload: Upload,
        parents: tuple[int, ...],
        provenance: Provenance,
        request_id: str,
    ) -> int:
        outcome = self.registry.publish_revision(
            self.principal,
            ref,
            upload,
            request_id,
            parents=parents,
            training_run_id=provenance.training_run_id,
            dataset_fingerprints=provenance.dataset_fingerprints,
            hyperparameters=provenance.hyperparameters,
            tool_versions=provenance.tool_versions,
        )
        # A retry's answer is the state the first attempt made: its last revision.
        return outcome.adapter.revisions[-1].number

    def record_evaluation(
        self,
        ref: AdapterRef,
        revision: int,
        suite: str,
        metrics: Mapping[str, float],
        passed: bool,
        dataset_fingerprint: str,
        request_id: str,
    ) -> None:
        self.registry.record_evaluation(
            self.principal, ref, revision, suite, metrics, passed, request_id, dataset_fingerprint
        )

    def promote(
        self, ref: AdapterRef, channel: str, revision: int, reason: str, request_id: str
    ) -> None:
        self.registry.move_channel(self.principal, ref, channel, revision, request_id, reason)

    def finish(
        self,
        ref: AdapterRef,
        update_id: str,
        revision: int,
        outcome: str,
        reason: str,
        request_id: str,
    ) -> None:
        self.registry.finish_update(
            self.principal, ref, update_id, revision, outcome, request_id, reason
        )
