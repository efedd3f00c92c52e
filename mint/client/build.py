"""Request messages built from the clients' arguments (shared by the blocking, the async
and the protobuf-level client)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

from mint.layout import ADAPTER_CONFIG, ADAPTER_WEIGHTS
from mint.v1 import inference_pb2 as ipb
from mint.v1 import registry_pb2 as pb
from mint.v1.events_pb2 import Shape

from . import types as t

CHUNK_BYTES = 1024 * 1024
# Called as an upload's bytes go out: (bytes sent, bytes in all). A retried upload starts
# over from 0.
Progress = Callable[[int, int], None]
Adapters = str | t.Selector | Sequence[str | t.Selector]
PublishSource = Path | str | tuple[bytes, bytes]
# An update's examples: the JSON bytes, or the example objects ({"prompt", "completion"}).
PICKLED_WEIGHTS = "adapter_model.bin"  # what save_pretrained writes without safetensors
UpdateExamples = bytes | Sequence[Mapping[str, object]]


def parse_ref(text: str) -> pb.AdapterRef:
    """`tenant/name` -> its AdapterRef; the registry checks the names themselves."""
    tenant, slash, name = text.partition("/")
    if not (tenant and slash and name):  # else the registry could only name an empty part
        raise ValueError(f"{text!r} is not an adapter ref: write TENANT/NAME, e.g. acme/tone")
    return pb.AdapterRef(tenant=tenant, name=name)


def register_base(
    name: str, fingerprint: str, parameters: Mapping[str, Sequence[int]], request_id: str
) -> pb.RegisterBaseModelRequest:
    base = pb.BaseModel(
        name=name,
        fingerprint=fingerprint,
        parameters={k: Shape(dims=list(v)) for k, v in parameters.items()},
    )
    return pb.RegisterBaseModelRequest(base=base, request_id=request_id)


def create_adapter(
    ref: str, base_fingerprint: str, labels: Mapping[str, str] | None, request_id: str
) -> pb.CreateAdapterRequest:
    return pb.CreateAdapterRequest(
        ref=parse_ref(ref),
        base_fingerprint=base_fingerprint,
        labels=dict(labels or {}),
        request_id=request_id,
    )


def record_evaluation(
    ref: str,
    revision: int,
    suite: str,
    metrics: Mapping[str, float],
    passed: bool,
    request_id: str,
    dataset_fingerprint: str = "",
    expected_version: int | None = None,
) -> pb.RecordEvaluationRequest:
    request = pb.RecordEvaluationRequest(
        ref=parse_ref(ref),
        revision=revision,
        suite=suite,
        metrics=dict(metrics),
        passed=passed,
        request_id=request_id,
        dataset_fingerprint=dataset_fingerprint,
    )
    return _expecting(request, expected_version)


def set_gate(
    ref: str,
    channel: str,
    required_suite: str,
    request_id: str,
    expected_version: int | None,
    requirement: str = "",
    threshold: float = 0.0,
    examples: bytes = b"",
) -> pb.SetChannelGateRequest:
    request = pb.SetChannelGateRequest(
        ref=parse_ref(ref),
        channel=channel,
        required_suite=required_suite,
        request_id=request_id,
        requirement=requirement,
        threshold=threshold,
        examples=examples,
    )
    return _expecting(request, expected_version)


def move_channel(
    ref: str,
    channel: str,
    revision: int,
    reason: str,
    request_id: str,
    expected_version: int | None,
) -> pb.MoveChannelRequest:
    request = pb.MoveChannelRequest(
        ref=parse_ref(ref),
        channel=channel,
        revision=revision,
        reason=reason,
        request_id=request_id,
    )
    return _expecting(request, expected_version)


def archive(
    ref: str, reason: str, request_id: str, expected_version: int | None
) -> pb.ArchiveAdapterRequest:
    request = pb.ArchiveAdapterRequest(ref=parse_ref(ref), reason=reason, request_id=request_id)
    return _expecting(request, expected_version)


def request_update(
    ref: str, examples: UpdateExamples, kind: str, channel: str, request_id: str
) -> pb.RequestUpdateRequest:
    return pb.RequestUpdateRequest(
        ref=parse_ref(ref),
        request_id=request_id,
        kind=kind,
        examples=examples_bytes(examples),
        channel=channel,
    )


def examples_bytes(examples: UpdateExamples) -> bytes:
    """The RequestUpdate body: JSON bytes as given, or a list of example objects."""
    if isinstance(examples, bytes):
        return examples
    return json.dumps({"examples": list(examples)}, ensure_ascii=False).encode()


def finish_update(
    ref: str, update_id: str, revision: int, outcome: str, reason: str, request_id: str
) -> pb.FinishUpdateRequest:
    return pb.FinishUpdateRequest(
        ref=parse_ref(ref),
        request_id=request_id,
        update_id=update_id,
        revision=revision,
        outcome=outcome,
        reason=reason,
    )


def erase(ref: str, request_id: str, expected_version: int | None) -> pb.EraseAdapterRequest:
    return _expecting(
        pb.EraseAdapterRequest(ref=parse_ref(ref), request_id=request_id), expected_version
    )


_Command = TypeVar(
    "_Command",
    pb.RecordEvaluationRequest,
    pb.SetChannelGateRequest,
    pb.MoveChannelRequest,
    pb.ArchiveAdapterRequest,
    pb.EraseAdapterRequest,
)


def _expecting(request: _Command, expected_version: int | None) -> _Command:
    if expected_version is not None:
        request.expected_version = expected_version
    return request


def list_page(
    tenant: str, labels: Mapping[str, str] | None, page_size: int, page_token: str
) -> pb.ListAdaptersRequest:
    return pb.ListAdaptersRequest(
        tenant=tenant, labels=dict(labels or {}), page_size=page_size, page_token=page_token
    )


def watch(
    tenant: str, from_offsets: Mapping[int, int] | None, until_end: bool = False
) -> pb.WatchEventsRequest:
    return pb.WatchEventsRequest(
        tenant=tenant, from_offsets=dict(from_offsets or {}), until_end=until_end
    )


def upload_bytes(source: PublishSource) -> tuple[bytes, bytes]:
    """(adapter_config.json, adapter_model.safetensors) from a PEFT folder or as given."""
    if isinstance(source, tuple):
        return source
    folder = Path(source)
    check_peft_folder(folder)
    return (folder / ADAPTER_CONFIG).read_bytes(), (folder / ADAPTER_WEIGHTS).read_bytes()


def check_peft_folder(folder: Path) -> None:
    """ValueError unless `folder` holds what PEFT's save_pretrained writes: which file is
    missing, and what to do about a pickle."""
    missing = [name for name in (ADAPTER_CONFIG, ADAPTER_WEIGHTS) if not (folder / name).is_file()]
    if ADAPTER_WEIGHTS in missing and (folder / PICKLED_WEIGHTS).exists():
        raise ValueError(
            f"{folder} holds {PICKLED_WEIGHTS}, a pickle file, which MinT never loads: "
            "re-save the adapter with `save_pretrained(..., safe_serialization=True)` to write "
            f"{ADAPTER_WEIGHTS}"
        )
    if missing:
        raise ValueError(
            f"{folder} has no {' or '.join(missing)}: give the folder PEFT's save_pretrained wrote"
        )


def upload_parts(
    header: pb.PublishRevisionHeader, weights: bytes, progress: Progress | None = None
) -> Iterator[pb.PublishRevisionRequest]:
    """The header, then the weights in chunks; a new iterator for each attempt."""
    yield pb.PublishRevisionRequest(header=header)
    for start in range(0, len(weights), CHUNK_BYTES):
        chunk = weights[start : start + CHUNK_BYTES]
        yield pb.PublishRevisionRequest(weights_chunk=chunk)
        if progress is not None:
            progress(start + len(chunk), len(weights))


def publish_header(
    ref: str,
    config: bytes,
    weights: bytes,
    request_id: str,
    expected_version: int | None,
    **provenance: object,
) -> pb.PublishRevisionHeader:
    header = pb.PublishRevisionHeader(
        ref=parse_ref(ref),
        request_id=request_id,
        adapter_config=config,
        weights_sha256=hashlib.sha256(weights).hexdigest(),
        weights_size=len(weights),
        **provenance,  # type: ignore[arg-type]
    )
    if expected_version is not None:
        header.expected_version = expected_version
    return header


def get_adapter(ref: str) -> pb.GetAdapterRequest:
    return pb.GetAdapterRequest(ref=parse_ref(ref))


def history(ref: str) -> pb.HistoryRequest:
    return pb.HistoryRequest(ref=parse_ref(ref))


def revision_request(ref: str, revision: int, channel: str) -> pb.GetRevisionRequest:
    request = pb.GetRevisionRequest(ref=parse_ref(ref))
    if channel:
        request.channel = channel
    else:
        request.revision = revision
    return request


def selectors(adapters: Adapters) -> list[ipb.AdapterSelector]:
    listed = [adapters] if isinstance(adapters, str | t.Selector) else adapters
    out = []
    for item in listed:
        selector = t.Selector.parse(item) if isinstance(item, str) else item
        message = ipb.AdapterSelector(adapter=selector.adapter)
        if selector.channel is not None:
            message.channel = selector.channel
        if selector.revision is not None:
            message.revision = selector.revision
        if selector.weight is not None:
            message.weight = selector.weight
        out.append(message)
    return out


def generate_request(
    prompt: str, adapters: Adapters, sampling: t.Sampling | None
) -> ipb.GenerateRequest:
    s = sampling or t.Sampling()
    wire = ipb.Sampling(
        max_new_tokens=s.max_new_tokens,
        temperature=s.temperature,
        stop_at_eos=s.stop_at_eos,
    )
    if s.top_p is not None:
        wire.top_p = s.top_p
    if s.seed is not None:  # else the node draws one and names it in the provenance
        wire.seed = s.seed
    return ipb.GenerateRequest(adapters=selectors(adapters), prompt=prompt, sampling=wire)


def score_request(prompt: str, continuation: str, adapters: Adapters) -> ipb.ScoreRequest:
    return ipb.ScoreRequest(adapters=selectors(adapters), prompt=prompt, continuation=continuation)
