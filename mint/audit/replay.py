"""The registry's state at a moment in the log: a checkpoint (partition → offset) or a
time, folded from the events alone."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from mint.domain import adapter as agg
from mint.domain.events import BaseModelRegistered
from mint.eventlog.port import Recorded


@dataclass
class RegistryState:
    adapters: dict[str, agg.Adapter] = field(default_factory=dict)
    bases: dict[str, BaseModelRegistered] = field(default_factory=dict)
    events: int = 0


def replay(
    records: Iterable[Recorded],
    until_offsets: Mapping[int, int] | None = None,
    until_time: datetime | None = None,
) -> RegistryState:
    """Fold every event before `until_offsets` (partition → first offset excluded) and,
    given `until_time`, that occurred at or before it."""
    state = RegistryState()
    for r in records:
        if until_offsets is not None and r.position.offset >= until_offsets.get(
            r.position.partition, 0
        ):
            continue
        if (
            until_time is not None
            and r.envelope.occurred_at.ToDatetime(tzinfo=until_time.tzinfo) > until_time
        ):
            continue
        event = r.event
        if isinstance(event, BaseModelRegistered):
            state.bases.setdefault(event.fingerprint, event)
        else:
            stream = r.envelope.stream_id
            state.adapters[stream] = agg.apply(state.adapters.get(stream), event)
        state.events += 1
    return state


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
