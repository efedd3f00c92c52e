"""What the audit makes of erasures: who erased which adapter, when and where in the log,
and which problems an erasure explains.

An erased adapter's blobs open no more (its data key is destroyed) and its projection is
deleted, while its earlier events, read first in log order, still name them. Such
problems are held per stream until the walk meets the adapter's tombstone, which
explains them; those of an adapter never erased are problems after all."""

from __future__ import annotations

from dataclasses import dataclass

from mint.domain.events import AdapterErased
from mint.eventlog.chain import ChainProblem
from mint.eventlog.port import Recorded


@dataclass(frozen=True)
class Erasure:
    stream_id: str  # tenant/name
    adapter_id: str
    actor: str  # who erased it
    erased_at: str  # when (the event's time, ISO 8601)
    position: str  # where its tombstone is in the log

    def __str__(self) -> str:
        return (
            f"{self.stream_id} ({self.adapter_id}) erased by {self.actor} at "
            f"{self.erased_at}, {self.position}"
        )


class ErasureLedger:
    def __init__(self) -> None:
        self.erasures: list[Erasure] = []
        self._held: dict[str, list[ChainProblem]] = {}  # stream -> problems held
        self._erased: set[str] = set()

    def erased(self, stream_id: str) -> bool:
        return stream_id in self._erased

    def hold(self, problem: ChainProblem) -> None:
        """A problem an erasure later in the log would explain (or has: reads are judged
        a little after their events, and no revision follows an erasure)."""
        if problem.stream_id not in self._erased:
            self._held.setdefault(problem.stream_id, []).append(problem)

    def note(self, r: Recorded, event: AdapterErased) -> None:
        stream = r.envelope.stream_id
        self._erased.add(stream)
        self._held.pop(stream, None)  # explained
        self.erasures.append(
            Erasure(
                stream,
                event.adapter_id,
                r.envelope.actor,
                r.envelope.occurred_at.ToJsonString(),
                str(r.position),
            )
        )

    def unexplained(self) -> list[ChainProblem]:
        """Problems held for adapters the log never erased."""
        return [p for problems in self._held.values() for p in problems]
