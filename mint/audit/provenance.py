"""An adapter's lineage from the log: revisions and their parents, who trained them on
what, evaluations, channel moves — as text, JSON and an SVG graph.

As in replay.py, a record that cannot be placed (one that is no event, whichever adapter
it was of; an event that does not decode, of a stream never created, or naming a
revision not published before it) raises Unfoldable, or, given `skip`, goes to it and is
left out.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict
from html import escape
from typing import Any

from mint.domain.errors import InvalidArgument, NotFound
from mint.domain.events import (
    AdapterArchived,
    AdapterCreated,
    ChannelGateSet,
    ChannelMoved,
    EvaluationRecorded,
    RevisionPublished,
)
from mint.domain.names import AdapterRef
from mint.eventlog.chain import ChainProblem
from mint.eventlog.port import Recorded

from .records import LogRecord, Skip, Unreadable, left_out, never_created, problem_at


def lineage(
    records: Iterable[LogRecord],
    ref: AdapterRef,
    revision: int | None = None,
    skip: Skip | None = None,
) -> dict[str, Any]:
    """Everything the log says about `ref` (or, with `revision`, about that revision and
    its ancestors). A record that cannot be placed raises Unfoldable, or, given `skip`,
    is handed to it and left out."""
    doc: dict[str, Any] = {"adapter": str(ref), "revisions": {}, "history": []}
    found = False
    for r in records:
        if isinstance(r, Recorded) and r.envelope.stream_id != str(ref):
            continue
        found = found or isinstance(r, Recorded)
        problem = r.problem() if isinstance(r, Unreadable) else _add(doc, r)
        if problem is not None:
            left_out(problem, skip)
    if not found:
        raise NotFound(f"adapter {ref} is not in the log")
    if revision is not None:
        keep = _ancestors(doc["revisions"], revision)
        doc["revisions"] = {n: r for n, r in doc["revisions"].items() if n in keep}
    return doc


def _add(doc: dict[str, Any], r: Recorded) -> ChainProblem | None:
    """Add the event to the lineage, or say why it cannot be (the lineage unchanged)."""
    try:
        e = r.event
    except InvalidArgument:  # a type or schema this mint does not know: upgrade it, not skip
        raise
    except Exception as exc:  # an altered payload may not even decode
        return problem_at(r, f"payload does not decode: {type(exc).__name__}: {exc}")
    if "adapter_id" not in doc and not isinstance(e, AdapterCreated):
        return never_created(r)
    if isinstance(e, EvaluationRecorded | ChannelMoved) and e.revision not in doc["revisions"]:
        return problem_at(
            r, f"{type(e).__name__} of revision {e.revision}, which no event before it published"
        )
    _record(doc, r, e)
    return None


def _record(doc: dict[str, Any], r: Recorded, e: Any) -> None:
    """The event in the lineage: its history, and what it says of its revision."""
    when, who = r.envelope.occurred_at.ToJsonString(), r.envelope.actor
    doc["history"].append(
        {
            "version": r.envelope.stream_version,
            "at": when,
            "by": who,
            "event": type(e).__name__,
            "position": str(r.position),
        }
    )
    if isinstance(e, AdapterCreated):
        doc.update(adapter_id=e.adapter_id, owner=e.owner, base=e.base_fingerprint, created_at=when)
    elif isinstance(e, RevisionPublished):
        doc["revisions"][e.revision] = {
            "number": e.revision,
            "parents": list(e.parents),
            "published_at": when,
            "published_by": who,
            "weights_sha256": e.weights_sha256,
            "provenance": asdict(e.provenance),
            "evaluations": [],
            "channels": [],
        }
    elif isinstance(e, EvaluationRecorded):
        doc["revisions"][e.revision]["evaluations"].append({**asdict(e), "at": when})
    elif isinstance(e, ChannelMoved):
        doc["revisions"][e.revision]["channels"].append(
            {
                "channel": e.channel,
                "at": when,
                "by": who,
                "reason": e.reason,
                "from": e.previous_revision,
            }
        )
    elif isinstance(e, ChannelGateSet | AdapterArchived):
        pass  # in the history above


def _ancestors(revisions: dict[int, Any], start: int) -> set[int]:
    if start not in revisions:
        raise NotFound(f"no revision {start}")
    seen, todo = set(), [start]
    while todo:
        n = todo.pop()
        if n not in seen:
            seen.add(n)
            todo += revisions[n]["parents"]
    return seen


def to_text(doc: dict[str, Any]) -> str:
    lines = [
        f"{doc['adapter']}  (id {doc.get('adapter_id')}, owner {doc.get('owner')}, "
        f"base {str(doc.get('base'))[:16]}…)"
    ]
    for n, r in sorted(doc["revisions"].items()):
        p = r["provenance"]
        parents = ", ".join(map(str, r["parents"])) or "none"
        lines.append(
            f"  revision {n}: published {r['published_at']} by {r['published_by']}; "
            f"parents {parents}; run {p['training_run_id'] or '-'}; "
            f"datasets {', '.join(p['dataset_fingerprints']) or '-'}"
        )
        if p["hyperparameters"]:
            lines.append(
                "    hyperparameters: "
                + ", ".join(f"{k}={v}" for k, v in sorted(p["hyperparameters"].items()))
            )
        for e in r["evaluations"]:
            verdict = "passed" if e["passed"] else "failed"
            lines.append(
                f"    evaluation {e['suite']} {verdict} {e['metrics']} by "
                f"{e['evaluator']} at {e['at']}"
            )
        for c in r["channels"]:
            lines.append(
                f"    -> {c['channel']} at {c['at']} by {c['by']}"
                + (f" ({c['reason']})" if c["reason"] else "")
            )
    return "\n".join(lines)


def to_svg(doc: dict[str, Any]) -> str:
    """Revisions as boxes left to right, arrows from parents, channels and verdicts inside."""
    revisions = sorted(doc["revisions"].values(), key=lambda r: r["number"])
    box_w, box_h, gap, top = 190, 96, 50, 50
    x = {r["number"]: 20 + i * (box_w + gap) for i, r in enumerate(revisions)}
    width = 40 + len(revisions) * (box_w + gap)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{top + box_h + 80}" '
        'font-family="sans-serif" font-size="12">',
        '<defs><marker id="arrow" markerWidth="10" markerHeight="8" refX="9" refY="4" '
        'orient="auto"><path d="M0,0 L10,4 L0,8 z" fill="#555"/></marker></defs>',
        f'<text x="20" y="28" font-size="15" font-weight="bold">'
        f"{escape(doc['adapter'])} lineage</text>",
    ]
    for r in revisions:
        for parent in r["parents"]:
            if parent in x:
                parts.append(
                    f'<path d="M{x[parent] + box_w},{top + box_h / 2} C{x[parent] + box_w + 30},'
                    f"{top + box_h + 40} {x[r['number']] - 30},{top + box_h + 40} "
                    f'{x[r["number"]]},{top + box_h / 2}" fill="none" stroke="#555" '
                    'marker-end="url(#arrow)"/>'
                )
        channels = sorted({c["channel"] for c in r["channels"]})
        verdicts = [f"{e['suite']} {'✓' if e['passed'] else '✗'}" for e in r["evaluations"]]
        color = "#e8f4e8" if any(e["passed"] for e in r["evaluations"]) else "#eef2f8"
        lines = [
            f"revision {r['number']}",
            f"by {r['published_by']}",
            f"run {r['provenance']['training_run_id'] or '-'}",
            ", ".join(verdicts) or "not evaluated",
            ("channels: " + ", ".join(channels)) if channels else "",
        ]
        parts.append(
            f'<rect x="{x[r["number"]]}" y="{top}" width="{box_w}" height="{box_h}" '
            f'rx="8" fill="{color}" stroke="#4a7bb7"/>'
        )
        for i, text in enumerate(t for t in lines if t):
            weight = ' font-weight="bold"' if i == 0 else ""
            parts.append(
                f'<text x="{x[r["number"]] + 10}" y="{top + 20 + i * 17}"{weight}>'
                f"{escape(text)}</text>"
            )
    parts.append("</svg>")
    return "\n".join(parts) + "\n"
