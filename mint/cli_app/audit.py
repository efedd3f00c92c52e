"""`mint audit ...`: a tenant's log checked and explained on the client.

The events come through the registry's `WatchEvents` (read to the log's end), as stored:
each envelope whole, so its hash chain is checked here with the same code the operators'
`mint-audit` runs (`mint.audit`), and the bare install needs no Kafka or S3 to do it.
Blobs and the projection are checked by `mint-audit verify` (it reads S3).
"""

from __future__ import annotations

import json as jsonlib
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from mint.audit import diagrams, provenance, replay, verify
from mint.audit.progress import shown
from mint.audit.verify import PROGRESS_EVERY, Progress
from mint.domain.errors import DomainError, InvalidArgument, NotFound
from mint.domain.names import AdapterRef
from mint.domain.names import tenant as tenant_name
from mint.eventlog.port import Recorded

from . import options as o
from .output import EXIT_NOT_FOUND, connected, emit, emit_json, fail, out

app = typer.Typer(
    help="Check a tenant's hash chains, replay its state to a moment, explain an adapter's "
    "lineage: from the registry's event stream, checked on this machine.",
    no_args_is_help=True,
    rich_markup_mode="markdown",
)


def _checked_tenant(value: str) -> str:
    try:
        return tenant_name(value)
    except DomainError as exc:  # "*" (an admin's every tenant) included: one tenant a scan
        raise typer.BadParameter(str(exc)) from None


Tenant = Annotated[
    str,
    typer.Argument(help="The tenant whose adapters are read, e.g. acme.", callback=_checked_tenant),
]


class Format(StrEnum):
    text = "text"
    json = "json"
    svg = "svg"
    dot = "dot"
    mermaid = "mermaid"


RENDER: dict[Format, Callable[[dict[str, Any]], str]] = {
    Format.text: lambda doc: provenance.to_text(doc) + "\n",
    Format.svg: provenance.to_svg,
    Format.dot: diagrams.to_dot,
    Format.mermaid: diagrams.to_mermaid,
}


def _counted(records: Iterable[Recorded], show: Callable[[Progress], None]) -> Iterator[Recorded]:
    """`records`, telling `show` how many were read (and of how many streams) as they pass."""
    streams: set[str] = set()
    count = 0
    for r in records:
        count += 1
        streams.add(r.envelope.stream_id)
        if count % PROGRESS_EVERY == 0:
            show(Progress(count, len(streams), 0, 0))
        yield r
    show(Progress(count, len(streams), 0, 0))


@app.command(name="verify", epilog="Example: mint audit verify acme --json")
def verify_command(tenant: Tenant, json: o.Json = False) -> None:
    """Walk every hash chain of the tenant's adapters: an altered, dropped or reordered
    event is a problem naming the adapter, version and log position (exit 1). Progress
    goes to stderr."""
    with connected() as client, shown() as show:  # stderr: stdout is the report
        report = verify.verify(client.scan(tenant), progress=show)
    emit(
        {
            "tenant": tenant,
            "events": report.events,
            "streams": report.streams,
            "clean": report.clean,
            "problems": report.problems,
        },
        json,
        lambda: _render_report(tenant, report),
    )
    if not report.clean:
        raise fail(
            "error: the log does not hold what was written — keep this report and tell your "
            "operator (`mint-audit verify` also checks the blobs and the projection)"
        )


def _render_report(tenant: str, report: verify.Report) -> None:
    for problem in report.problems:
        out.print(f"PROBLEM {problem}", markup=False)
    if not report.events:  # "clean" would read as checked: a misspelt tenant has no events
        out.print(f"no events of tenant {tenant}: nothing to check (is the name right?)")
        return
    verdict = "clean" if report.clean else f"{len(report.problems)} problems"
    out.print(f"{report.events} events in {report.streams} streams checked: {verdict}")


def _offsets(text: str | None) -> dict[int, int] | None:
    if text is None:
        return None
    try:
        return {int(p): int(n) for p, n in (pair.split(":") for pair in text.split(","))}
    except ValueError:
        raise typer.BadParameter(
            f"{text!r}: write PARTITION:OFFSET[,PARTITION:OFFSET...], e.g. 0:120,1:98",
            param_hint="--as-of-offsets",
        ) from None


def _moment(text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        example = "2026-11-29T15:00:00Z"
        raise typer.BadParameter(
            f"{text!r}: write an ISO time, e.g. {example}", param_hint="--as-of"
        ) from None
    if moment.tzinfo is None:
        raise typer.BadParameter(f"{text!r}: add a time zone, e.g. Z for UTC", param_hint="--as-of")
    return moment


@app.command(name="replay", epilog="Example: mint audit replay acme --as-of 2026-11-29T15:00:00Z")
def replay_command(
    tenant: Tenant,
    as_of: Annotated[
        str | None, typer.Option(help="An ISO time with its zone: events up to it.")
    ] = None,
    as_of_offsets: Annotated[
        str | None,
        typer.Option(help="PARTITION:OFFSET,...: events before these (history --json shows them)."),
    ] = None,
    json: o.Json = False,
) -> None:
    """The tenant's adapters as they were at a moment (default: now), folded from the
    events alone: versions, revisions, channels, evaluations."""
    if as_of is not None and as_of_offsets is not None:
        raise typer.BadParameter("give --as-of or --as-of-offsets, not both")
    until_offsets, until_time = _offsets(as_of_offsets), _moment(as_of)
    with connected() as client, shown(doing="reading", done="read") as show, _folding(tenant):
        state = replay.replay(_counted(client.scan(tenant), show), until_offsets, until_time)
    emit(replay.to_json(state), json, lambda: typer.echo(replay.to_table(state)))


@app.command(
    name="provenance",
    epilog="Example: mint audit provenance acme/tone@3 --format mermaid --output lineage.md",
)
def provenance_command(
    ref: Annotated[
        str, typer.Argument(help="tenant/name, or tenant/name@REVISION for it and its ancestors.")
    ],
    format: Annotated[
        Format, typer.Option(help="text, json, svg, dot (Graphviz) or mermaid.")
    ] = Format.text,
    output: Annotated[
        Path | None, typer.Option(help="Write it to this file instead of stdout.")
    ] = None,
    json: o.Json = False,
) -> None:
    """An adapter's lineage from its events: revisions and their parents, who published
    them from which training run and datasets, evaluations, channel moves."""
    name, _, at = ref.partition("@")
    try:
        adapter = AdapterRef.parse(name)
        revision = int(at) if at else None
    except (DomainError, ValueError):
        raise typer.BadParameter(f"{ref!r}: write tenant/name or tenant/name@REVISION") from None
    reading = shown(doing="reading", done="read")
    with connected() as client, reading as show, _folding(adapter.tenant):
        records = _counted(client.scan(adapter.tenant), show)
        doc = provenance.lineage(records, adapter, revision)
    if json or format is Format.json:
        if output is None:
            emit_json(doc)
            return
        output.write_text(_json_text(doc))
    elif output is None:
        typer.echo(RENDER[format](doc), nl=False)
        return
    else:
        output.write_text(RENDER[format](doc))
    typer.echo(f"lineage of {ref} written to {output}", err=True)


@contextmanager
def _folding(tenant: str) -> Iterator[None]:
    """What folding the events can refuse, as one line: an adapter or revision not in the
    log, or an event this install cannot read (a newer server wrote it)."""
    try:
        yield
    except NotFound as exc:
        hint = f"`mint adapter ls {tenant}` lists the tenant's adapters"
        raise fail(f"error: {exc} — {hint}", EXIT_NOT_FOUND) from None
    except InvalidArgument as exc:  # the codec's: an event type or schema it does not know
        upgrade = "this log is newer than this mint: pip install -U mint"
        raise fail(f"error: {exc} — {upgrade}") from None


def _json_text(doc: dict[str, Any]) -> str:
    return jsonlib.dumps(doc, indent=2, sort_keys=True, default=str) + "\n"
