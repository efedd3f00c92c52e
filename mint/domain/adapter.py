"""The adapter aggregate: state folded from its events, and the commands that extend it.

Commands never mutate: each checks the current state and returns the events to append.
The stream version is the number of events applied so far (contiguous from 1).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

from . import bounds, gates, names
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
    UpdateFinished,
    UpdateRequested,
)

LATEST = "latest"
METHODS = frozenset({"lora"})
UPDATE_KINDS = frozenset({"examples", "feedback"})
UPDATE_OUTCOMES = frozenset({"promoted", "held"})


@dataclass(frozen=True)
class Revision:
    number: int
    weights_sha256: str
    weights_size: int
    config_json: str
    parents: tuple[int, ...]
    provenance: Provenance
    evaluations: tuple[EvaluationRecorded, ...] = ()


@dataclass(frozen=True)
class Adapter:
    created: AdapterCreated
    version: int = 1
    revisions: tuple[Revision, ...] = ()
    channels: Mapping[str, int] = field(default_factory=dict)
    gates: Mapping[str, gates.Gate] = field(default_factory=dict)  # channel -> its gate
    archived: bool = False
    # Update requests in the order asked, and how each that finished ended.
    updates: tuple[UpdateRequested, ...] = ()
    finished: Mapping[str, UpdateFinished] = field(default_factory=dict)
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

    def update(self, update_id: str) -> UpdateRequested:
        for requested in self.updates:
            if requested.update_id == update_id:
                return requested
        raise NotFound(f"{self.ref} has no update request {update_id!r}")

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
    revisions, channels, gated = state.revisions, state.channels, state.gates
    archived, updates, finished = state.archived, state.updates, state.finished
    erased_at = state.erased_at
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
            gated = {k: v for k, v in gated.items() if k != event.channel}
            if event.required_suite:
                gated[event.channel] = gates.Gate(
                    event.required_suite,
                    event.requirement or gates.ANY,
                    event.threshold,
                    event.examples_sha256,
                )
        case ChannelMoved():
            channels = {**channels, event.channel: event.revision}
        case AdapterArchived():
            archived = True
        case UpdateRequested():
            updates = (*updates, event)
        case UpdateFinished():
            finished = {**finished, event.update_id: event}
        case AdapterErased():
            erased_at = event.erased_at
        case _:
            raise TypeError(f"not an adapter event: {event!r}")
    return Adapter(
        state.created,
        state.version + 1,
        revisions,
        channels,
        gated,
        archived,
        updates,
        finished,
        erased_at,
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
    events.extend(
        ChannelGateSet(
            channel,
            g.suite,
            "" if g.requirement == gates.ANY else g.requirement,
            g.threshold,
            g.examples_sha256,
        )
        for channel, g in state.gates.items()
    )
    events.extend(ChannelMoved(channel, rev, 0) for channel, rev in state.channels.items())
    events.extend(state.updates)
    events.extend(state.finished.values())
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
    for key, value in (labels or {}).items():
        names.label_key(key)
        names.label_value(value)
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
    check_publishable(state, provenance, parents)
    number = len(state.revisions) + 1
    return [
        RevisionPublished(
            number, weights_sha256, weights_size, config_json, provenance, tuple(parents)
        ),
        ChannelMoved(LATEST, number, state.channels.get(LATEST, 0), "published"),
    ]


def check_publishable(state: Adapter, provenance: Provenance, parents: tuple[int, ...]) -> None:
    """What refuses a publish whatever its weights: checked before they are."""
    _writable(state)
    bounds.text("training_run_id", provenance.training_run_id)
    bounds.items("dataset_fingerprints", provenance.dataset_fingerprints)
    bounds.mapping("hyperparameters", provenance.hyperparameters)
    bounds.mapping("tool_versions", provenance.tool_versions)
    for parent in parents:
        state.revision(parent)  # NotFound for a parent that does not exist


def record_evaluation(
    state: Adapter,
    revision: int,
    suite: str,
    metrics: Mapping[str, float],
    dataset_fingerprint: str,
    evaluator: str,
    passed: bool,
    platform: bool = False,
) -> list[AdapterEvent]:
    """`platform`: the evaluator is the platform's (the caller's authenticated flag)."""
    state.check_not_erased()
    state.revision(revision)
    bounds.metrics(metrics)
    bounds.text("dataset_fingerprint", dataset_fingerprint)
    names.suite(suite)
    return [
        EvaluationRecorded(
            revision, suite, dict(metrics), dataset_fingerprint, evaluator, passed, platform
        )
    ]


def set_gate(
    state: Adapter,
    channel: str,
    required_suite: str,
    requirement: str = gates.ANY,
    threshold: float = 0.0,
    examples_sha256: str = "",
) -> list[AdapterEvent]:
    """Gate `channel` on `required_suite` ("" removes the gate). A platform gate names
    its suite's stored examples and the threshold the evaluator judges them against."""
    _writable(state)
    names.channel(channel)
    if channel == LATEST and required_suite:
        raise InvalidArgument(
            f"{LATEST!r} moves to every revision published, so a gate there would never "
            "hold; gate the channel you promote to (stable, canary, ...)"
        )
    if not required_suite:
        return [ChannelGateSet(channel, "")]
    names.suite(required_suite)
    requirement = gates.requirement(requirement)
    if requirement == gates.PLATFORM:
        gates.check_threshold(threshold)
        if not examples_sha256:
            raise InvalidArgument("a platform gate needs its suite's examples")
    elif threshold or examples_sha256:
        raise InvalidArgument(
            f"a threshold and examples belong to platform gates, not {requirement!r} ones"
        )
    # `any` is written as "", so such gates' events stay what they were before requirements.
    written = "" if requirement == gates.ANY else requirement
    return [ChannelGateSet(channel, required_suite, written, threshold, examples_sha256)]


def move_channel(
    state: Adapter, channel: str, revision: int, reason: str = "", mover: str = ""
) -> list[AdapterEvent]:
    """Promote or roll back: point `channel` at `revision`, if its gate (if any) passed
    by an evaluation the gate accepts (`mover`: the principal moving it)."""
    _writable(state)
    bounds.text("reason", reason)
    names.channel(channel)
    target = state.revision(revision)
    gate = state.gates.get(channel)
    if gate is not None:
        where = (
            f"channel {channel!r} of {state.ref} (gate {gate.requirement}) at revision {revision}"
        )
        gates.check(gate, target.evaluations, mover, where)
    return [ChannelMoved(channel, revision, state.channels.get(channel, 0), reason)]


def archive(state: Adapter, reason: str) -> list[AdapterEvent]:
    _writable(state)
    bounds.text("reason", reason)
    return [AdapterArchived(reason)]


def request_update(
    state: Adapter,
    update_id: str,
    kind: str,
    examples_sha256: str,
    examples_size: int,
    channel: str,
) -> list[AdapterEvent]:
    """An update from examples already stored as a blob; the trainer takes it from here."""
    _writable(state)
    bounds.text("update id", update_id, names.MAX_UPDATE_ID)
    if kind not in UPDATE_KINDS:
        raise InvalidArgument(f"unknown update kind {kind!r}; supported: {sorted(UPDATE_KINDS)}")
    names.channel(channel)
    if channel == LATEST:
        raise InvalidArgument(f"{LATEST!r} follows every revision; promote to another channel")
    if any(u.update_id == update_id for u in state.updates):
        raise AlreadyExists(f"{state.ref} already has an update {update_id!r}")
    return [UpdateRequested(update_id, kind, examples_sha256, examples_size, channel)]


def finish_update(
    state: Adapter, update_id: str, revision: int, outcome: str, reason: str = ""
) -> list[AdapterEvent]:
    """The last stage of an update: its revision promoted, or held (with why). Nothing
    follows an erasure's tombstone: the trainer drops an erased adapter's updates."""
    state.check_not_erased()
    state.update(update_id)
    bounds.text("reason", reason)
    if outcome not in UPDATE_OUTCOMES:
        raise InvalidArgument(f"unknown outcome {outcome!r}; one of {sorted(UPDATE_OUTCOMES)}")
    if revision:
        state.revision(revision)
    if update_id in state.finished:
        raise FailedPrecondition(
            f"update {update_id!r} of {state.ref} already finished "
            f"({state.finished[update_id].outcome})"
        )
    return [UpdateFinished(update_id, revision, outcome, reason)]


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
