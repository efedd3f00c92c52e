"""Domain events: frozen facts. Their wire form is protobuf (proto/mint/v1/events.proto)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class AdapterCreated:
    adapter_id: str
    tenant: str
    name: str
    owner: str
    base_fingerprint: str
    method: str
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Provenance:
    principal: str
    training_run_id: str = ""
    dataset_fingerprints: tuple[str, ...] = ()
    hyperparameters: dict[str, str] = field(default_factory=dict)
    tool_versions: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class RevisionPublished:
    revision: int
    weights_sha256: str
    weights_size: int
    config_json: str
    provenance: Provenance
    parents: tuple[int, ...] = ()


@dataclass(frozen=True)
class EvaluationRecorded:
    revision: int
    suite: str
    metrics: dict[str, float]
    dataset_fingerprint: str
    evaluator: str
    passed: bool
    platform: bool = False  # recorded by the platform's evaluator, never client-claimed


@dataclass(frozen=True)
class ChannelGateSet:
    channel: str
    required_suite: str  # "" removes the gate
    requirement: str = ""  # "any" ("" before requirements), "four_eyes" or "platform"
    threshold: float = 0.0  # platform: the least mean log-prob per continuation token
    examples_sha256: str = ""  # platform: the suite's examples (a blob)


@dataclass(frozen=True)
class ChannelMoved:
    channel: str
    revision: int
    previous_revision: int  # 0: the channel was unset
    reason: str = ""


@dataclass(frozen=True)
class AdapterArchived:
    reason: str


@dataclass(frozen=True)
class UpdateRequested:
    """Examples (a blob: no personal data here) to update the adapter from."""

    update_id: str  # the RequestUpdate call's request id; every later stage names it
    kind: str  # "examples" or "feedback"
    examples_sha256: str
    examples_size: int
    channel: str  # promoted there when the update's evaluation passes its gate


@dataclass(frozen=True)
class UpdateFinished:
    update_id: str
    revision: int  # 0: none was made
    outcome: str  # "promoted" or "held"
    reason: str = ""


@dataclass(frozen=True)
class AdapterErased:
    """The tombstone: who and when are the envelope's; no reason is kept."""

    adapter_id: str
    erased_at: str  # ISO 8601, UTC


@dataclass(frozen=True)
class BaseModelRegistered:
    name: str
    fingerprint: str
    parameters: dict[str, tuple[int, ...]]  # name -> shape


AdapterEvent = (
    AdapterCreated
    | RevisionPublished
    | EvaluationRecorded
    | ChannelGateSet
    | ChannelMoved
    | AdapterArchived
    | UpdateRequested
    | UpdateFinished
    | AdapterErased
)
Event = AdapterEvent | BaseModelRegistered
