"""What a serving request asks for, checked before anything is resolved or loaded.

Pure (no torch, no I/O), so the router and the nodes check requests the same way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from mint.domain.errors import InvalidArgument
from mint.domain.names import AdapterRef, channel

MAX_STACKED_ADAPTERS = 4
MAX_NEW_TOKENS = 512
MAX_WEIGHT = 16.0


@dataclass(frozen=True)
class Selector:
    """One adapter of a request: a channel (None: the current view) or an exact revision."""

    adapter: AdapterRef
    channel: str | None = None
    revision: int | None = None
    weight: float = 1.0

    def __post_init__(self) -> None:
        if self.channel is not None and self.revision is not None:
            raise InvalidArgument(f"{self.adapter}: name a channel or a revision, not both")
        if self.channel is not None:
            channel(self.channel)
        if self.revision is not None and self.revision < 1:
            raise InvalidArgument(f"{self.adapter}: revisions are numbered from 1")
        if not math.isfinite(self.weight) or not 0 < abs(self.weight) <= MAX_WEIGHT:
            raise InvalidArgument(
                f"{self.adapter}: weight must be finite, non-zero and at most {MAX_WEIGHT} "
                f"in magnitude, not {self.weight}"
            )


def check_stack(selectors: list[Selector]) -> list[Selector]:
    if len(selectors) > MAX_STACKED_ADAPTERS:
        raise InvalidArgument(
            f"{len(selectors)} adapters in one request; at most {MAX_STACKED_ADAPTERS} stack"
        )
    names = [str(s.adapter) for s in selectors]
    if len(set(names)) != len(names):
        raise InvalidArgument("an adapter appears twice in one request; combine the weights")
    return selectors


@dataclass(frozen=True)
class Sampling:
    max_new_tokens: int = 32
    temperature: float = 0.0  # 0: greedy
    top_p: float = 1.0
    seed: int = 0
    stop_at_eos: bool = False

    def check(self) -> Sampling:
        if not 1 <= self.max_new_tokens <= MAX_NEW_TOKENS:
            raise InvalidArgument(
                f"max_new_tokens must be 1..{MAX_NEW_TOKENS}, not {self.max_new_tokens}"
            )
        if not (math.isfinite(self.temperature) and 0.0 <= self.temperature <= 5.0):
            raise InvalidArgument(f"temperature must be between 0 and 5, not {self.temperature}")
        if not (math.isfinite(self.top_p) and 0.0 < self.top_p <= 1.0):
            raise InvalidArgument(f"top_p must be in (0, 1], not {self.top_p}")
        if not 0 <= self.seed < 2**63:
            raise InvalidArgument("seed must fit in 63 bits")
        return self


@dataclass(frozen=True)
class LogPosition:
    """Where a revision's RevisionPublished event sits in the adapter log."""

    partition: int
    offset: int


@dataclass(frozen=True, order=True)
class RevisionRef:
    """An exact adapter revision, as the projection describes it."""

    adapter_id: str
    adapter: str  # tenant/name: where the projection keeps the revision's files
    revision: int
    weights_sha256: str
    weights_size: int
    # Facts about the revision, not its identity: excluded from equality and hashing.
    base_fingerprint: str = field(default="", compare=False)
    config_json: str = field(default="", compare=False, repr=False)
    # None: the projection predates manifests naming it.
    log_position: LogPosition | None = field(default=None, compare=False, repr=False)

    @property
    def label(self) -> str:
        return f"{self.adapter}@{self.revision}"
