"""Inference protobufs ↔ serving requests, shared by the nodes, the router and clients."""

from __future__ import annotations

import secrets
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
    """The request's sampling; without a seed, one drawn at random (and reported in the
    reply's provenance, so the output can be replayed)."""
    return Sampling(
        max_new_tokens=message.max_new_tokens or 32,
        temperature=message.temperature,
        top_p=message.top_p if message.HasField("top_p") else 1.0,
        seed=message.seed if message.HasField("seed") else secrets.randbits(63),
        stop_at_eos=message.stop_at_eos,
    ).check()


def sampling_message(s: Sampling) -> pb.Sampling:
    """As a request names it, seed included."""
    return pb.Sampling(
        max_new_tokens=s.max_new_tokens,
        temperature=s.temperature,
        top_p=s.top_p,
        seed=s.seed,
        stop_at_eos=s.stop_at_eos,
    )


def exact(parts: Sequence[tuple[RevisionRef, float]]) -> list[pb.AdapterSelector]:
    """Selectors naming exact revisions (what the router forwards to a node)."""
    return [pb.AdapterSelector(adapter=r.adapter, revision=r.revision, weight=w) for r, w in parts]


def resolved(parts: Sequence[tuple[RevisionRef, float]]) -> list[pb.ResolvedAdapter]:
    return [_resolved(r, w) for r, w in parts]


def _resolved(ref: RevisionRef, weight: float) -> pb.ResolvedAdapter:
    out = pb.ResolvedAdapter(
        adapter=ref.adapter,
        adapter_id=ref.adapter_id,
        revision=ref.revision,
        weight=weight,
        weights_sha256=ref.weights_sha256,
    )
    if ref.log_position is not None:
        out.log_partition = ref.log_position.partition
        out.log_offset = ref.log_position.offset
    return out
