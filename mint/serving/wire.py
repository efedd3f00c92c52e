"""Inference protobufs ↔ serving requests, shared by the nodes, the router and clients."""

from __future__ import annotations

from collections.abc import Sequence

from mint.domain.errors import InvalidArgument
from mint.domain.names import AdapterRef
from mint.v1 import inference_pb2 as pb

from .requests import RevisionRef, Sampling, Selector, check_stack


def selectors(messages: Sequence[pb.AdapterSelector]) -> list[Selector]:
    out = []
    for m in messages:
        if not m.adapter:
            raise InvalidArgument("an adapter selector has no adapter name (tenant/name)")
        at = m.WhichOneof("at")
        out.append(
            Selector(
                AdapterRef.parse(m.adapter),
                channel=(m.channel or None) if at == "channel" else None,
                revision=m.revision if at == "revision" else None,
                weight=m.weight if m.HasField("weight") else 1.0,
            )
        )
    return check_stack(out)


def sampling(message: pb.Sampling) -> Sampling:
    return Sampling(
        max_new_tokens=message.max_new_tokens or 32,
        temperature=message.temperature,
        top_p=message.top_p if message.HasField("top_p") else 1.0,
        seed=message.seed,
        stop_at_eos=message.stop_at_eos,
    ).check()


def exact(parts: Sequence[tuple[RevisionRef, float]]) -> list[pb.AdapterSelector]:
    """Selectors naming exact revisions (what the router forwards to a node)."""
    return [pb.AdapterSelector(adapter=r.adapter, revision=r.revision, weight=w) for r, w in parts]


def resolved(parts: Sequence[tuple[RevisionRef, float]]) -> list[pb.ResolvedAdapter]:
    return [
        pb.ResolvedAdapter(
            adapter=r.adapter, adapter_id=r.adapter_id, revision=r.revision, weight=w
        )
        for r, w in parts
    ]
