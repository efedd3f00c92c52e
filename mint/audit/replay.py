"""The registry's state at a moment in the log: a checkpoint (partition → offset) or a
time, folded from the events alone.

A record that cannot be read or folded (one that is no event, an event that does not
decode, an event of a stream that was never created) stops the replay with `Unfoldable`,
unless the caller takes such records (`skip`): then each is handed to it and left out,
and the state is the fold of the rest.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from mint.domain import adapter as agg
from mint.domain.errors import InvalidArgument
from mint.domain.events import AdapterCreated, BaseModelRegistered
from mint.eventlog.chain import ChainProblem
from mint.eventlog.port import Recorded

from .records import LogRecord, Skip, Unreadable, left_out, never_created, problem_at


@dataclass
class RegistryState:
    adapters: dict[str, agg.Adapter] = field(default_factory=dict)
    bases: dict[str, BaseModelRegistered] = field(default_factory=dict)
    events: int = 0


def replay(
    records: Iterable[LogRecord],
    until_offsets: Mapping[int, int] | None = None,
    until_time: datetime | None = None,
    skip: Skip | None = None,
) -> RegistryState:
    """Fold every event before `until_offsets` (partition → first offset excluded) and,
    given `until_time`, that occurred at or before it. A record that cannot be folded
    raises Unfoldable, or, given `skip`, is handed to it and left out."""
    state = RegistryState()
    for r in records:
        if until_offsets is not None and r.position.offset >= until_offsets.get(
            r.position.partition, 0
        ):
            continue
        if isinstance(r, Recorded) and _after(r, until_time):
            continue
        problem = r.problem() if isinstance(r, Unreadable) else _fold(state, r)
        if problem is None:
            state.events += 1
        else:
            left_out(problem, skip)
    return state


def _after(r: Recorded, moment: datetime | None) -> bool:
    return moment is not None and r.envelope.occurred_at.ToDatetime(tzinfo=moment.tzinfo) > moment


def _fold(state: RegistryState, r: Recorded) -> ChainProblem | None:
    """Fold the event into `state`, or say why it cannot be (the state unchanged)."""
    try:
        event = r.event
        if isinstance(event, BaseModelRegistered):
            state.bases.setdefault(event.fingerprint, event)
            return None
        stream = r.envelope.stream_id
        adapter = state.adapters.get(stream)
        if adapter is None and not isinstance(event, AdapterCreated):
            return never_created(r)
        state.adapters[stream] = agg.apply(adapter, event)
    except InvalidArgument:  # a type or schema this mint does not know: upgrade it, not skip
        raise
    except Exception as exc:  # an altered event can fail anywhere in decoding or folding
        return problem_at(r, f"cannot be folded: {type(exc).__name__}: {exc}")
    return None


def to_json(state: RegistryState) -> dict[str, Any]:
    return {
        "events": state.events,
        "bases": {fp: {"name": b.name} for fp, b in sorted(state.bases.items())},
        "adapters": {ref: _adapter_json(a) for ref, a in sorted(state.adapters.items())},
    }


def _adapter_json(a: agg.Adapter) -> dict[str, Any]:
    c = a.created
    return {
        "adapter_id": c.adapter_id,
        "owner": c.owner,
        "base": c.base_fingerprint,
        "version": a.version,
        "archived": a.archived,
        "channels": dict(a.channels),
        "gates": {channel: asdict(g) for channel, g in a.gates.items()},
        "labels": c.labels,
        "revisions": [
            {
                "number": r.number,
                "weights_sha256": r.weights_sha256,
                "parents": list(r.parents),
                "provenance": asdict(r.provenance),
                "evaluations": [asdict(e) for e in r.evaluations],
            }
            for r in a.revisions
        ],
    }


def to_table(state: RegistryState) -> str:
    rows = [("adapter", "ver", "revisions", "channels", "evaluations", "archived")]
    for ref, a in sorted(state.adapters.items()):
        channels = " ".join(f"{k}={v}" for k, v in sorted(a.channels.items()))
        evaluations = sum(len(r.evaluations) for r in a.revisions)
        rows.append(
            (
                ref,
                str(a.version),
                str(len(a.revisions)),
                channels or "-",
                str(evaluations),
                "yes" if a.archived else "no",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.append(
        f"\n{len(state.adapters)} adapters, {len(state.bases)} base models, {state.events} events"
    )
    return "\n".join(lines)
