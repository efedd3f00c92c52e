"""Answers read into `mint.client.types` (shared by the blocking and the async client)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC

from mint.domain.errors import InvalidArgument
from mint.eventlog import codec
from mint.eventlog.port import Position, Recorded
from mint.v1 import inference_pb2 as ipb
from mint.v1 import registry_pb2 as pb

from . import types as t


def ref_text(ref: pb.AdapterRef) -> str:
    return f"{ref.tenant}/{ref.name}"


def base_model(message: pb.BaseModel) -> t.BaseModel:
    parameters = {k: tuple(int(d) for d in v.dims) for k, v in message.parameters.items()}
    return t.BaseModel(message.name, message.fingerprint, parameters)


def revision(message: pb.Revision) -> t.Revision:
    p = message.provenance
    return t.Revision(
        number=message.number,
        weights_sha256=message.weights_sha256,
        weights_size=message.weights_size,
        config_json=message.config_json,
        parents=tuple(message.parents),
        provenance=t.Provenance(
            p.principal,
            p.training_run_id,
            tuple(p.dataset_fingerprints),
            dict(p.hyperparameters),
            dict(p.tool_versions),
        ),
        evaluations=tuple(
            t.Evaluation(
                e.revision,
                e.suite,
                dict(e.metrics),
                e.dataset_fingerprint,
                e.evaluator,
                e.passed,
                e.platform,
            )
            for e in message.evaluations
        ),
    )


def adapter(message: pb.Adapter) -> t.Adapter:
    return t.Adapter(
        adapter_id=message.adapter_id,
        ref=ref_text(message.ref),
        owner=message.owner,
        base_fingerprint=message.base_fingerprint,
        method=message.method,
        labels=dict(message.labels),
        version=message.version,
        revisions=tuple(revision(r) for r in message.revisions),
        channels=dict(message.channels),
        gates=dict(message.gates),
        archived=message.archived,
        gate_rules={
            channel: t.Gate(r.suite, r.requirement, r.threshold, r.examples_sha256)
            for channel, r in message.gate_rules.items()
        },
        erased_at=message.erased_at,
    )


def command_result(message: pb.CommandResult, request_id: str) -> t.CommandResult:
    return t.CommandResult(
        adapter(message.adapter),
        message.first_version,
        message.last_version,
        message.duplicate,
        request_id,
    )


def page(message: pb.ListAdaptersResponse) -> t.Page:
    summaries = tuple(
        t.AdapterSummary(a.adapter_id, ref_text(a.ref), a.base_fingerprint, dict(a.labels))
        for a in message.adapters
    )
    return t.Page(summaries, message.next_page_token)


def event(message: pb.RecordedEvent) -> t.Event:
    e = message.envelope
    try:
        payload: t.EventPayload | None = codec.decode(e.event_type, e.schema_version, e.payload)
    except InvalidArgument:  # written by a newer server than this client knows
        payload = None
    return t.Event(
        partition=message.partition,
        offset=message.offset,
        event_id=e.event_id,
        event_type=e.event_type,
        stream_id=e.stream_id,
        stream_version=e.stream_version,
        occurred_at=e.occurred_at.ToDatetime(tzinfo=UTC),
        actor=e.actor,
        request_id=e.request_id,
        correlation_id=e.correlation_id,
        hash=e.hash.hex(),
        prev_hash=e.prev_hash.hex(),
        payload=payload,
    )


def recorded(message: pb.RecordedEvent) -> Recorded:
    """An event as stored (its envelope whole, so its hash can be checked), and where."""
    return Recorded(message.envelope, Position(message.partition, message.offset))


def resolved(adapters: Iterable[ipb.ResolvedAdapter]) -> tuple[t.ResolvedAdapter, ...]:
    return tuple(
        t.ResolvedAdapter(
            a.adapter,
            a.adapter_id,
            a.revision,
            a.weight,
            a.weights_sha256,
            a.log_partition,
            a.log_offset if a.HasField("log_offset") else None,
        )
        for a in adapters
    )


def provenance(
    message: ipb.GenerateResponse | ipb.GenerateChunk | ipb.ScoreResponse,
) -> t.OutputProvenance | None:
    if not message.HasField("provenance"):
        return None
    p = message.provenance
    return t.OutputProvenance(
        p.response_id, p.node, p.engine_version, p.base_fingerprint, resolved(p.adapters), p.seed
    )


def generation(message: ipb.GenerateResponse) -> t.Generation:
    return t.Generation(
        message.text,
        tuple(message.tokens),
        resolved(message.adapters),
        message.node,
        message.batch_size,
        provenance(message),
    )


def chunk(message: ipb.GenerateChunk) -> t.GenerationChunk:
    return t.GenerationChunk(
        message.text,
        tuple(message.tokens),
        resolved(message.adapters),
        message.node,
        provenance(message),
    )


def score(message: ipb.ScoreResponse) -> t.Score:
    return t.Score(
        tuple(message.token_logprobs),
        message.total_logprob,
        resolved(message.adapters),
        message.node,
        provenance(message),
    )
