"""Domain objects → protobuf messages (the servicer's only translation work)."""

from __future__ import annotations

from mint.catalog.port import AdapterSummary
from mint.domain import adapter as agg
from mint.domain.errors import InvalidArgument
from mint.domain.events import BaseModelRegistered, EvaluationRecorded, Provenance
from mint.domain.gates import Gate
from mint.domain.names import AdapterRef
from mint.eventlog.port import Recorded
from mint.v1 import events_pb2 as ev_pb
from mint.v1 import registry_pb2 as pb


def ref_to_pb(ref: AdapterRef) -> pb.AdapterRef:
    return pb.AdapterRef(tenant=ref.tenant, name=ref.name)


def ref_from_pb(message: pb.AdapterRef) -> AdapterRef:
    return AdapterRef(message.tenant, message.name)


def revision_at(request: pb.GetRevisionRequest) -> int | str:
    """The revision a request names: a number (from 1) or a channel."""
    if request.WhichOneof("at") == "channel":
        return request.channel
    if request.revision < 1:
        raise InvalidArgument(
            "name a revision (numbered from 1) or a channel, such as stable or latest"
        )
    return request.revision


def base_to_pb(base: BaseModelRegistered) -> pb.BaseModel:
    return pb.BaseModel(
        name=base.name,
        fingerprint=base.fingerprint,
        parameters={k: ev_pb.Shape(dims=list(v)) for k, v in base.parameters.items()},
    )


def provenance_to_pb(p: Provenance) -> ev_pb.Provenance:
    return ev_pb.Provenance(
        principal=p.principal,
        training_run_id=p.training_run_id,
        dataset_fingerprints=list(p.dataset_fingerprints),
        hyperparameters=p.hyperparameters,
        tool_versions=p.tool_versions,
    )


def evaluation_to_pb(e: EvaluationRecorded) -> ev_pb.EvaluationRecorded:
    return ev_pb.EvaluationRecorded(
        revision=e.revision,
        suite=e.suite,
        metrics=e.metrics,
        dataset_fingerprint=e.dataset_fingerprint,
        evaluator=e.evaluator,
        passed=e.passed,
        platform=e.platform,
    )


def revision_to_pb(r: agg.Revision) -> pb.Revision:
    return pb.Revision(
        number=r.number,
        weights_sha256=r.weights_sha256,
        weights_size=r.weights_size,
        config_json=r.config_json,
        parents=list(r.parents),
        provenance=provenance_to_pb(r.provenance),
        evaluations=[evaluation_to_pb(e) for e in r.evaluations],
    )


def adapter_to_pb(a: agg.Adapter) -> pb.Adapter:
    c = a.created
    return pb.Adapter(
        adapter_id=c.adapter_id,
        ref=ref_to_pb(a.ref),
        owner=c.owner,
        base_fingerprint=c.base_fingerprint,
        method=c.method,
        labels=c.labels,
        version=a.version,
        revisions=[revision_to_pb(r) for r in a.revisions],
        channels=dict(a.channels),
        gates={channel: g.suite for channel, g in a.gates.items()},
        archived=a.archived,
        gate_rules={channel: gate_to_pb(g) for channel, g in a.gates.items()},
        erased=a.erased,
        erased_at=a.erased_at,
    )


def gate_to_pb(g: Gate) -> pb.GateRule:
    return pb.GateRule(
        suite=g.suite,
        requirement=g.requirement,
        threshold=g.threshold,
        examples_sha256=g.examples_sha256,
    )


def summary_to_pb(s: AdapterSummary) -> pb.AdapterSummary:
    return pb.AdapterSummary(
        adapter_id=s.adapter_id,
        ref=pb.AdapterRef(tenant=s.tenant, name=s.name),
        base_fingerprint=s.base_fingerprint,
        labels=dict(s.labels),
    )


def recorded_to_pb(r: Recorded) -> pb.RecordedEvent:
    return pb.RecordedEvent(
        envelope=r.envelope, partition=r.position.partition, offset=r.position.offset
    )
