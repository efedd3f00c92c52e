"""The adapter aggregate: state folded from its events, and the commands that extend it.

Commands never mutate: each checks the current state and returns the events to append.
The stream version is the number of events applied so far (contiguous from 1).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

from . import bounds, names
from .errors import AlreadyExists, Erased, FailedPrecondition, InvalidArgument, NotFound
from .events import (
    AdapterArchived,
    AdapterCreated,
    AdapterErased,
    AdapterEvent,
    ChannelGateSet,
    ChannelMoved,
    EvaluationRecorded,
    Provenance,
    RevisionPublished,
)

LATEST = "latest"
METHODS = frozenset({"lora"})


@dataclass(frozen=True)
class Revision:
    number: int
    weights_sha256: str
    weights_size: int
    config_json: str
    parents: tuple[int, ...]
    provenance: Provenance
    evaluations: tuple[EvaluationRecorded, ...] = ()

    def passed(self, suite: str) -> bool:
        """True if the latest evaluation of `suite` on this revision passed."""
        verdicts = [e.passed for e in self.evaluations if e.suite == suite]
        return bool(verdicts) and verdicts[-1]


@dataclass(frozen=True)
class Adapter:
    created: AdapterCreated
    version: int = 1
    revisions: tuple[Revision, ...] = ()
    channels: Mapping[str, int] = field(default_factory=dict)
    gates: Mapping[str, str] = field(default_factory=dict)
    archived: bool = False
    erased_at: str = ""  # set once erased (ISO 8601, UTC)

    @property
    def adapter_id(self) -> str:
        return self.created.adapter_id

    @property
    def erased(self) -> bool:
        return bool(self.erased_at)

    def check_not_erased(self) -> None:
        """Erased adapters keep their history but have no weights: say so, not less."""
        if self.erased:
            raise Erased(
                f"adapter {self.ref} was erased at {self.erased_at}: its weights are gone "
                "for good; publish to a new adapter"
            )

    @property
    def ref(self) -> names.AdapterRef:
        return names.AdapterRef(self.created.tenant, self.created.name)

    def revision(self, number: int) -> Revision:
        if not 1 <= number <= len(self.revisions):
            raise NotFound(f"{self.ref} has no revision {number} (it has {len(self.revisions)})")
        return self.revisions[number - 1]

    def resolve(self, channel: str) -> Revision:
        if channel not in self.channels:
            raise NotFound(f"{self.ref} has no channel {channel!r}")
        return self.revision(self.channels[channel])


def apply(state: Adapter | None, event: AdapterEvent) -> Adapter:
    """Fold one event into the state. Pure; events are facts, so nothing is re-checked.

    Builds the next state directly (not with `dataclasses.replace`, which inspects the
    fields on every call): replaying the log is this function in a loop."""
    if isinstance(event, AdapterCreated):
        return Adapter(created=event)
    if state is None:
        raise ValueError(f"{type(event).__name__} before AdapterCreated")
    revisions, channels, gates = state.revisions, state.channels, state.gates
    archived, erased_at = state.archived, state.erased_at
    match event:
        case RevisionPublished():
            rev = Revision(
                event.revision,
                event.weights_sha256,
                event.weights_size,
                event.config_json,
                event.parents,
                event.provenance,
            )
            revisions = (*revisions, rev)
        case EvaluationRecorded():
            revs = list(revisions)
            old = revs[event.revision - 1]
            revs[event.revision - 1] = replace(old, evaluations=(*old.evaluations, event))
            revisions = tuple(revs)
        case ChannelGateSet():
            gates = {k: v for k, v in gates.items() if k != event.channel}
            if event.required_suite:
                gates[event.channel] = event.required_suite
        case ChannelMoved():
            channels = {**channels, event.channel: event.revision}
        case AdapterArchived():
            archived = True
        case AdapterErased():
            erased_at = event.erased_at
        case _:
            raise TypeError(f"not an adapter event: {event!r}")
    return Adapter(
        state.created, state.version + 1, revisions, channels, gates, archived, erased_at
    )


def fold(events: Iterable[AdapterEvent]) -> Adapter | None:
    state: Adapter | None = None
    for event in events:
        state = apply(state, event)
    return state


def compact(state: Adapter) -> list[AdapterEvent]:
    """Events whose fold is `state` but for its version (set that from the stream): one
    per revision, evaluation, gate and channel, however many moves the history holds.
    What a snapshot stores instead of the history."""
    events: list[AdapterEvent] = [state.created]
    for r in state.revisions:
        events.append(
            RevisionPublished(
                r.number, r.weights_sha256, r.weights_size, r.config_json, r.provenance, r.parents
            )
        )
        events.extend(r.evaluations)
    events.extend(ChannelGateSet(channel, suite) for channel, suite in state.gates.items())
    events.extend(ChannelMoved(channel, rev, 0) for channel, rev in state.channels.items())
    if state.archived:
        events.append(AdapterArchived(""))
    if state.erased:
        events.append(AdapterErased(state.adapter_id, state.erased_at))
    return events


# ---- commands ------------------------------------------------------------------------


def create(
    existing: Adapter | None,
    adapter_id: str,
    ref: names.AdapterRef,
    owner: str,
    base_fingerprint: str,
    method: str = "lora",
    labels: Mapping[str, str] | None = None,
) -> list[AdapterEvent]:
    if existing is not None:
        raise AlreadyExists(f"adapter {ref} already exists (id {existing.adapter_id})")
    if method not in METHODS:
        raise InvalidArgument(f"unknown adapter method {method!r}; supported: {sorted(METHODS)}")
    bounds.mapping("labels", labels or {})
    for key in labels or {}:
        names.suite(key)  # label keys share the suite alphabet
    return [
        AdapterCreated(
            adapter_id, ref.tenant, ref.name, owner, base_fingerprint, method, dict(labels or {})
        )
    ]


def publish(
    state: Adapter,
    weights_sha256: str,
    weights_size: int,
    config_json: str,
    provenance: Provenance,
    parents: tuple[int, ...] = (),
) -> list[AdapterEvent]:
    """A new revision, numbered next, and `latest` moved to it in the same append."""
    _writable(state)
    bounds.text("training_run_id", provenance.training_run_id)
    bounds.items("dataset_fingerprints", provenance.dataset_fingerprints)
    bounds.mapping("hyperparameters", provenance.hyperparameters)
    bounds.mapping("tool_versions", provenance.tool_versions)
    for parent in parents:
        state.revision(parent)  # NotFound for a parent that does not exist
    number = len(state.revisions) + 1
    return [
        RevisionPublished(
            number, weights_sha256, weights_size, config_json, provenance, tuple(parents)
        ),
        ChannelMoved(LATEST, number, state.channels.get(LATEST, 0), "published"),
    ]


def record_evaluation(
    state: Adapter,
    revision: int,
    suite: str,
    metrics: Mapping[str, float],
    dataset_fingerprint: str,
    evaluator: str,
    passed: bool,
) -> list[AdapterEvent]:
    state.check_not_erased()
    state.revision(revision)
    bounds.metrics(metrics)
    bounds.text("dataset_fingerprint", dataset_fingerprint)
    names.suite(suite)
    return [
        EvaluationRecorded(revision, suite, dict(metrics), dataset_fingerprint, evaluator, passed)
    ]


def set_gate(state: Adapter, channel: str, required_suite: str) -> list[AdapterEvent]:
    _writable(state)
    names.channel(channel)
    if required_suite:
        names.suite(required_suite)
    return [ChannelGateSet(channel, required_suite)]


def move_channel(
    state: Adapter, channel: str, revision: int, reason: str = ""
) -> list[AdapterEvent]:
    """Promote or roll back: point `channel` at `revision`, if its gate (if any) passed."""
    _writable(state)
    bounds.text("reason", reason)
    names.channel(channel)
    target = state.revision(revision)
    suite = state.gates.get(channel)
    if suite and not target.passed(suite):
        raise FailedPrecondition(
            f"channel {channel!r} of {state.ref} requires a passing {suite!r} evaluation; "
            f"revision {revision} has none: record one first"
        )
    return [ChannelMoved(channel, revision, state.channels.get(channel, 0), reason)]


def archive(state: Adapter, reason: str) -> list[AdapterEvent]:
    _writable(state)
    bounds.text("reason", reason)
    return [AdapterArchived(reason)]


def erase(state: Adapter, erased_at: str) -> list[AdapterEvent]:
    """The tombstone; an archived adapter can be erased too. Erasing an erased adapter
    appends nothing (the caller finishes what a crash may have left undone)."""
    if state.erased:
        return []
    return [AdapterErased(state.adapter_id, erased_at)]


def _writable(state: Adapter) -> None:
    state.check_not_erased()
    if state.archived:
        raise FailedPrecondition(f"{state.ref} is archived; it accepts no further changes")
