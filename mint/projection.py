"""What the projection holds, decided from the events alone (no I/O).

Layout (Hugging Face PEFT layout per revision, so a revision loads with
`PeftModel.from_pretrained`):

  adapters/<tenant>/<name>/revisions/<n>/adapter_model.safetensors   (the blob, opened)
  adapters/<tenant>/<name>/revisions/<n>/adapter_config.json
  adapters/<tenant>/<name>/revisions/<n>/manifest.json               (written last)
  adapters/<tenant>/<name>/revisions/<n>/evaluations.json
  adapters/<tenant>/<name>/channels/<channel>.json                    (pointers)
  adapters/<tenant>/<name>/current.json      (the default channel: stable, else latest)
  catalog/<tenant>/<name>.json               (one entry per adapter, listable by page)

An erased adapter keeps only its catalog entry (marked erased); everything under
adapters/<tenant>/<name>/ is deleted, after whatever its batch wrote there.
  bases/<fingerprint>.json

Every object is a function of the events, never of wall-clock time, so a rebuild from
offset 0 writes the same bytes. (A manifest names where its revision's event sits in the
log, which a rebuild of the same topic finds at the same place: served outputs name it as
their provenance.) Each operation names its stage: the sink
writes every object of a stage before any of the next (files, then manifests, then the
mutable objects), so a pointer never lands before the revision it points to.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from enum import IntEnum
from typing import Any

from mint.domain import adapter as agg
from mint.domain.errors import DomainError
from mint.domain.events import (
    AdapterArchived,
    AdapterCreated,
    AdapterErased,
    BaseModelRegistered,
    ChannelMoved,
    EvaluationRecorded,
    Event,
    RevisionPublished,
)
from mint.eventlog import codec
from mint.eventlog.chain import NO_EVENTS, Head, follows
from mint.eventlog.port import Recorded
from mint.layout import ADAPTER_CONFIG, ADAPTER_WEIGHTS, MANIFEST, adapter_prefix, revision_prefix

DEFAULT_CHANNELS = ("stable", "latest")  # `current` follows the first one that is set


class Stage(IntEnum):
    """When an object may be written: all of one stage land before any of the next."""

    FILES = 0  # revision files and base descriptions: immutable
    MANIFESTS = 1  # a revision's manifest, once its files are there
    MUTABLE = 2  # pointers, current, catalog entries, evaluations: what readers follow
    ERASE = 3  # an erased adapter's objects go, after anything the batch wrote for it


@dataclass(frozen=True)
class PutJson:
    key: str
    body: bytes
    # For mutable objects (pointers, catalog, evaluations): the stream version they
    # reflect. The sink never replaces an object reflecting a later version, so replays
    # and redeliveries never move a pointer backwards, not even for a moment.
    version: int | None = None
    stage: Stage = Stage.FILES
    # A mutable object no earlier event wrote: the sink tries to create it in one round
    # trip before reading what is there (which it does only if something is).
    new: bool = False


@dataclass(frozen=True)
class CopyBlob:
    """The adapter's blob, opened with its data key, as a PEFT file (skipped once the
    adapter is erased: its key is gone and its erasure deletes the folder)."""

    key: str
    adapter_id: str
    sha256: str
    size: int
    stage: Stage = Stage.FILES


@dataclass(frozen=True)
class DeletePrefix:
    """Delete every object under `key` (an erased adapter's folder)."""

    key: str
    stage: Stage = Stage.ERASE


def mutable(key: str, body: bytes, version: int, new: bool = False) -> PutJson:
    """A mutable object: written last, by compare-and-swap on its stream version."""
    return PutJson(key, body, version, Stage.MUTABLE, new)


Operation = PutJson | CopyBlob | DeletePrefix


def canonical_json(doc: Any) -> bytes:
    return (json.dumps(doc, sort_keys=True, indent=2, ensure_ascii=False) + "\n").encode()


class ForeignRecord(ValueError):
    """An event no registry wrote: it does not carry its stream's chain on (a stream never
    created, a version out of order, a broken link), or says what its stream cannot
    (a move to a revision never published). Planned as nothing."""


class Planner:
    """Folds events per stream and says which objects each event writes."""

    def __init__(self) -> None:
        self.adapters: dict[str, agg.Adapter] = {}
        self.heads: dict[str, Head] = {}  # stream -> its last event's version and hash

    def observe(self, recorded: Recorded) -> None:
        """Fold without planning (catching up to where the projection already is)."""
        self.plan(recorded)

    def plan(self, recorded: Recorded) -> list[Operation]:
        """What `recorded` writes; ForeignRecord, and nothing folded, for an event no
        registry wrote. An event type this version does not know raises InvalidArgument:
        a newer registry's, which only a newer projector may plan."""
        envelope = recorded.envelope
        stream = envelope.stream_id
        head = self.heads.get(stream, NO_EVENTS)
        if not follows(envelope, head):
            raise ForeignRecord(
                f"{stream} version {envelope.stream_version} does not follow version "
                f"{head[0]} of its chain"
            )
        if head == NO_EVENTS and envelope.event_type not in codec.CREATIONS:
            raise ForeignRecord(f"{stream} begins with {envelope.event_type}, not its creation")
        event = recorded.event  # once it chains: a forged one of an unknown type is skipped
        try:
            operations = self._plan(recorded, event)
        except (DomainError, LookupError, ValueError) as exc:
            raise ForeignRecord(f"{stream} version {envelope.stream_version}: {exc}") from exc
        self.heads[stream] = (envelope.stream_version, envelope.hash)
        return operations

    def _plan(self, recorded: Recorded, event: Event) -> list[Operation]:
        if isinstance(event, BaseModelRegistered):
            return [
                PutJson(
                    f"bases/{event.fingerprint}.json",
                    canonical_json(
                        {
                            "name": event.name,
                            "fingerprint": event.fingerprint,
                            "parameters": {k: list(v) for k, v in sorted(event.parameters.items())},
                        }
                    ),
                )
            ]
        stream = recorded.envelope.stream_id
        before = self.adapters.get(stream)
        state = agg.apply(before, event)
        operations = self._operations(recorded, event, before, state)
        self.adapters[stream] = state  # only once planned: a refused event folds nothing
        return operations

    def _operations(
        self, recorded: Recorded, event: Event, before: agg.Adapter | None, state: agg.Adapter
    ) -> list[Operation]:
        match event:
            case AdapterCreated() | AdapterArchived():
                return [self._catalog(state, new=before is None)]
            case AdapterErased():
                c = state.created
                return [
                    self._catalog(state, new=False),
                    DeletePrefix(adapter_prefix(c.tenant, c.name)),
                ]
            case RevisionPublished():
                return self._revision(state, event, recorded)
            case EvaluationRecorded():
                rev = state.revision(event.revision)
                prefix = revision_prefix(state.created.tenant, state.created.name, rev.number)
                doc = {
                    "stream_version": state.version,
                    "evaluations": [asdict(e) for e in rev.evaluations],
                }
                first = len(rev.evaluations) == 1
                return [
                    mutable(prefix + "evaluations.json", canonical_json(doc), state.version, first)
                ]
            case ChannelMoved():
                return self._pointers(state, event.channel, set(before.channels if before else ()))
        return []  # ChannelGateSet: nothing a reader of the projection needs

    def _catalog(self, state: agg.Adapter, new: bool) -> PutJson:
        c = state.created
        doc = {
            "adapter_id": c.adapter_id,
            "tenant": c.tenant,
            "name": c.name,
            "owner": c.owner,
            "base_fingerprint": c.base_fingerprint,
            "method": c.method,
            "labels": c.labels,
            "archived": state.archived,
            "erased_at": state.erased_at,
            "stream_version": state.version,
        }
        return mutable(f"catalog/{c.tenant}/{c.name}.json", canonical_json(doc), state.version, new)

    def _revision(
        self, state: agg.Adapter, event: RevisionPublished, recorded: Recorded
    ) -> list[Operation]:
        c = state.created
        prefix = revision_prefix(c.tenant, c.name, event.revision)
        manifest = {
            "adapter_id": c.adapter_id,
            "tenant": c.tenant,
            "name": c.name,
            "revision": event.revision,
            "base_fingerprint": c.base_fingerprint,
            "method": c.method,
            "parents": list(event.parents),
            "config_json": event.config_json,  # so a reader needs no second GET
            "files": {
                ADAPTER_WEIGHTS: {"sha256": event.weights_sha256, "size": event.weights_size},
                ADAPTER_CONFIG: {"sha256": _sha256(event.config_json.encode())},
            },
            "provenance": asdict(event.provenance),
            "published_at": recorded.envelope.occurred_at.ToJsonString(),
            "event_id": recorded.envelope.event_id,
            "log_position": {
                "partition": recorded.position.partition,
                "offset": recorded.position.offset,
            },
        }
        return [
            CopyBlob(
                prefix + ADAPTER_WEIGHTS, c.adapter_id, event.weights_sha256, event.weights_size
            ),
            PutJson(prefix + ADAPTER_CONFIG, event.config_json.encode()),
            PutJson(prefix + MANIFEST, canonical_json(manifest), stage=Stage.MANIFESTS),
        ]

    def _pointers(self, state: agg.Adapter, channel: str, set_before: set[str]) -> list[Operation]:
        """The channel's pointer, and `current` if it follows this channel now; each is new
        if no channel it followed was set before."""
        c = state.created
        pointer = self._pointer(state, channel)
        base = adapter_prefix(c.tenant, c.name)
        key, version = f"{base}channels/{channel}.json", state.version
        ops: list[Operation] = [mutable(key, pointer, version, new=channel not in set_before)]
        current = next((ch for ch in DEFAULT_CHANNELS if ch in state.channels), None)
        if current == channel:
            new = not set_before.intersection(DEFAULT_CHANNELS)
            ops.append(mutable(f"{base}current.json", pointer, version, new))
        return ops

    def _pointer(self, state: agg.Adapter, channel: str) -> bytes:
        c, rev = state.created, state.resolve(channel)
        return canonical_json(
            {
                "adapter_id": c.adapter_id,
                "channel": channel,
                "revision": rev.number,
                "manifest": revision_prefix(c.tenant, c.name, rev.number) + MANIFEST,
                "weights_sha256": rev.weights_sha256,
                "stream_version": state.version,
            }
        )


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
