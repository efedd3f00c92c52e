"""The fleet as the nodes report it: who is alive, where, with what resident.

Pure bookkeeping fed with NodeReport messages (from the status topic); the router routes
with it and the controller places with it. A node is live while its reports keep coming
(within `silence_s`) and it has not said it is stopping.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from mint.v1 import residency_pb2 as pb

from .requests import RevisionRef


@dataclass
class NodeState:
    name: str
    address: str
    base_fingerprint: str
    budget_bytes: int
    slots: int
    resident: frozenset[tuple[str, int]]  # (adapter_id, revision)
    seen: float  # monotonic time of the last report
    stopping: bool = False
    max_prompt_tokens: int = 0
    tokenizer: str = ""  # what it counts prompt tokens with (a fingerprint)
    failed: dict[tuple[str, int], str] = field(default_factory=dict)


class FleetView:
    def __init__(self, silence_s: float = 4.0) -> None:
        self.silence_s = silence_s
        self.nodes: dict[str, NodeState] = {}

    def apply(self, report: pb.NodeReport, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        failed = dict(self.nodes[report.node].failed) if report.node in self.nodes else {}
        for outcome in report.outcomes:
            key = (outcome.revision.adapter_id, outcome.revision.revision)
            if outcome.kind == pb.LoadOutcome.FAILED:
                failed[key] = outcome.error
            else:
                failed.pop(key, None)
        self.nodes[report.node] = NodeState(
            name=report.node,
            address=report.address,
            base_fingerprint=report.base_fingerprint,
            budget_bytes=report.budget_bytes,
            slots=report.slots,
            resident=frozenset((r.adapter_id, r.revision) for r in report.resident),
            seen=now,
            stopping=report.stopping,
            max_prompt_tokens=report.max_prompt_tokens,
            tokenizer=report.tokenizer,
            failed=failed,
        )

    def live(self, now: float | None = None) -> list[NodeState]:
        now = time.monotonic() if now is None else now
        return sorted(
            (n for n in self.nodes.values() if not n.stopping and now - n.seen <= self.silence_s),
            key=lambda n: n.name,
        )

    def holding(self, refs: Iterable[RevisionRef], now: float | None = None) -> list[NodeState]:
        """Live nodes where every one of `refs` is resident."""
        keys = {(r.adapter_id, r.revision) for r in refs}
        return [n for n in self.live(now) if keys <= n.resident]

    def failure(self, ref: RevisionRef) -> str | None:
        """Why the last load of `ref` failed on some live node serving its base, if it did
        (a node of another base, given it by an older controller, says nothing about it)."""
        key = (ref.adapter_id, ref.revision)
        relevant = (n for n in self.live() if ref.base_fingerprint in ("", n.base_fingerprint))
        return next((n.failed[key] for n in relevant if key in n.failed), None)
