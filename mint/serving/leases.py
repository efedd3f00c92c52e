"""What the serving engine hands out and reports: a request's hold on its revisions and
its slot lease, the keys they are held under, and each memory tier's and rank class's
use. Values only; `engine.ServingEngine` keeps the state."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from mint.domain.errors import Unavailable

from .packed_model import LoraWeights
from .requests import RevisionRef
from .residency import ResidentKey


class NotResident(Unavailable):
    """A request names a revision this node does not hold (the router goes elsewhere)."""


def key_of(ref: RevisionRef) -> ResidentKey:
    return ResidentKey(ref.adapter_id, ref.revision)


def weights_bytes(weights: LoraWeights) -> int:
    return weights.nbytes


Parts = Sequence[tuple[RevisionRef, float]]


def stack_key(parts: Parts) -> ResidentKey:
    """The resident key of a weighted stack: which revisions, with which weights."""
    label = ";".join(f"{r.adapter_id}@{r.revision}*{w!r}" for r, w in parts)
    return ResidentKey("stack:" + hashlib.sha256(label.encode()).hexdigest()[:32], 0)


@dataclass(frozen=True)
class Hold:
    """A request's claim on its revisions before it has a slot: they stay on the node.
    `key`: the resident key whose slot it will use (its adapter's, or its stack's; None:
    the bare base), of rank `rank`."""

    parts: tuple[tuple[RevisionRef, float], ...]
    key: ResidentKey | None
    rank: int

    @property
    def stacked(self) -> bool:
        return not (len(self.parts) == 1 and self.parts[0][1] == 1.0)


@dataclass(frozen=True)
class Lease:
    """Slot `slot` held for one request (0: the bare base), and the hold it was taken
    for; released by the engine."""

    slot: int
    key: ResidentKey | None
    hold: Hold | None = None


@dataclass(frozen=True)
class Held:
    """A revision in the host tier: what it is, and its weights as the slots take them."""

    ref: RevisionRef
    weights: LoraWeights


@dataclass(frozen=True)
class TierUsage:
    tier: str  # "device" (the slots) or "host"
    budget_bytes: int
    used_bytes: int
    adapters: int  # in the device tier, weighted stacks count too
    slots: int = 0  # the device tier's slot count (slot 0, the bare base, not counted)


@dataclass(frozen=True)
class ClassUsage:
    """One rank class of the device slots."""

    rank: int
    slots: int
    filled: int  # slots holding a revision or a stack
    leased: int  # of those, held by running requests
    slot_bytes: int  # what each of its slots takes (counted against the device budget)
