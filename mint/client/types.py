"""What the clients return and take: frozen dataclasses, never protobuf messages.

Adapters are named `tenant/name` everywhere. Evaluations and provenance are the domain's
own records (`mint.domain.events`), as the registry stores them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from mint.domain.events import EvaluationRecorded as Evaluation
from mint.domain.events import Event as EventPayload
from mint.domain.events import Provenance
from mint.domain.gates import Gate

__all__ = [
    "Adapter",
    "AdapterSummary",
    "BaseModel",
    "CommandResult",
    "Evaluation",
    "Event",
    "EventPayload",
    "Gate",
    "Generation",
    "GenerationChunk",
    "OutputProvenance",
    "Page",
    "Provenance",
    "ResolvedAdapter",
    "Revision",
    "Sampling",
    "Score",
    "Selector",
]


@dataclass(frozen=True)
class BaseModel:
    name: str
    fingerprint: str  # 64 hex digits: sha256 over the config and every tensor
    parameters: Mapping[str, tuple[int, ...]]  # parameter name -> shape


@dataclass(frozen=True)
class Revision:
    number: int
    weights_sha256: str
    weights_size: int
    config_json: str  # adapter_config.json, canonical JSON
    parents: tuple[int, ...]
    provenance: Provenance
    evaluations: tuple[Evaluation, ...]

    @property
    def config(self) -> dict[str, Any]:
        loaded: dict[str, Any] = json.loads(self.config_json)
        return loaded


@dataclass(frozen=True)
class Adapter:
    adapter_id: str  # issued once by the registry; stays when nothing else does
    ref: str  # tenant/name
    owner: str
    base_fingerprint: str
    method: str
    labels: Mapping[str, str]
    version: int  # its stream's version: what `expected_version` compares with
    revisions: tuple[Revision, ...]
    channels: Mapping[str, int]  # channel -> revision number
    gates: Mapping[str, str]  # channel -> the evaluation suite a revision must pass
    archived: bool
    # channel -> its whole gate: the suite, whose verdict counts (any, four_eyes,
    # platform) and, for platform gates, the threshold and the examples' sha256
    gate_rules: Mapping[str, Gate] = field(default_factory=dict)
    erased_at: str = ""  # ISO 8601 (UTC) once erased: the revisions say what was, no more

    @property
    def erased(self) -> bool:
        return bool(self.erased_at)

    def revision(self, number: int) -> Revision:
        for revision in self.revisions:
            if revision.number == number:
                return revision
        raise KeyError(f"{self.ref} has no revision {number}")


@dataclass(frozen=True)
class CommandResult:
    """A command's outcome: the adapter after it, the stream versions it appended, and
    whether it was a retry of a command already applied (then nothing new was appended,
    and `adapter` is as that first attempt left it)."""

    adapter: Adapter
    first_version: int
    last_version: int
    duplicate: bool
    request_id: str


@dataclass(frozen=True)
class AdapterSummary:
    adapter_id: str
    ref: str
    base_fingerprint: str
    labels: Mapping[str, str]


@dataclass(frozen=True)
class Page:
    adapters: tuple[AdapterSummary, ...]
    next_page_token: str  # "" on the last page


@dataclass(frozen=True)
class Event:
    """One event of the log, where it is (`partition`, `offset`) and what it says."""

    partition: int
    offset: int
    event_id: str
    event_type: str  # the payload's message name, e.g. "mint.v1.RevisionPublished"
    stream_id: str  # tenant/name, or base:<fingerprint>
    stream_version: int
    occurred_at: datetime
    actor: str  # the authenticated principal
    request_id: str
    correlation_id: str
    hash: str  # hex; the chain: sha256 over the envelope, prev_hash included
    prev_hash: str
    payload: EventPayload | None  # None: a type this client does not know (a newer server)


# --- inference --------------------------------------------------------------------------

_SELECTOR = re.compile(r"(?P<adapter>[^@\s]+/[^@\s]+)(@(?P<at>[^@\s]+))?")


@dataclass(frozen=True)
class Selector:
    """One adapter of a request: its channel's revision (resolved when the request
    arrives), an exact revision, or neither (the adapter's current view). Stacked
    selectors each scale their delta by `weight` (default 1)."""

    adapter: str  # tenant/name
    channel: str | None = None
    revision: int | None = None
    weight: float | None = None

    def __post_init__(self) -> None:
        if self.channel is not None and self.revision is not None:
            raise ValueError(f"{self.adapter}: give a channel or a revision, not both")

    @classmethod
    def parse(cls, text: str) -> Selector:
        """`tenant/name`, `tenant/name@channel` or `tenant/name@<revision number>`."""
        match = _SELECTOR.fullmatch(text.strip())
        if match is None:
            raise ValueError(
                f"{text!r} names no adapter: write tenant/name, tenant/name@channel "
                "or tenant/name@<revision>, e.g. acme/tone@stable"
            )
        at = match["at"]
        if at is not None and at.isdigit():
            if int(at) < 1:
                raise ValueError(f"{text!r}: revisions start at 1 (or name a channel)")
            return cls(match["adapter"], revision=int(at))
        return cls(match["adapter"], channel=at)


@dataclass(frozen=True)
class Sampling:
    max_new_tokens: int = 32  # 1..512
    temperature: float = 0.0  # 0: greedy
    top_p: float | None = None  # (0, 1]; None: 1
    # The same seed gives the same sample, whatever it is batched with. None: the node
    # draws one, and the reply's provenance names it.
    seed: int | None = None
    stop_at_eos: bool = False


@dataclass(frozen=True)
class ResolvedAdapter:
    """What a selector resolved to: the exact revision that served."""

    adapter: str
    adapter_id: str
    revision: int
    weight: float
    weights_sha256: str = ""
    # Where its RevisionPublished event sits in the adapter log (None: not recorded).
    log_partition: int = 0
    log_offset: int | None = None


@dataclass(frozen=True)
class OutputProvenance:
    """Where an output came from; `mint-audit reproduce <response_id>` replays it."""

    response_id: str
    node: str
    engine_version: str
    base_fingerprint: str
    adapters: tuple[ResolvedAdapter, ...]
    seed: int  # the seed its sampler used


@dataclass(frozen=True)
class Generation:
    text: str
    tokens: tuple[int, ...]
    adapters: tuple[ResolvedAdapter, ...]
    node: str
    batch_size: int  # how many requests shared its forward passes
    provenance: OutputProvenance | None = None


@dataclass(frozen=True)
class GenerationChunk:
    """Part of a streamed generation; the first chunk also says what served it, and the
    last (without tokens) names the output's provenance."""

    text: str
    tokens: tuple[int, ...]
    adapters: tuple[ResolvedAdapter, ...]
    node: str
    provenance: OutputProvenance | None = None


@dataclass(frozen=True)
class Score:
    token_logprobs: tuple[float, ...]  # one per continuation token
    total_logprob: float
    adapters: tuple[ResolvedAdapter, ...]
    node: str
    provenance: OutputProvenance | None = None
