"""Response ids, drawn seeds and the replay request the audit builds from a record (pure
unit tests: the whole path on Kafka and S3 is tests/services/test_reproduce.py)."""

from __future__ import annotations

import uuid

import pytest
import torch

from mint.audit.reproduce import differences, log_problems, replay_request
from mint.domain.errors import FailedPrecondition, InvalidArgument
from mint.domain.events import Provenance, RevisionPublished
from mint.eventlog import codec
from mint.eventlog.port import Position, Recorded
from mint.serving import wire
from mint.serving.kernels import lora_path
from mint.serving.provenance import engine_version, new_response_id, response_time_ms
from mint.v1 import inference_pb2 as pb
from mint.v1 import responses_pb2 as rpb
from mint.v1.events_pb2 import EventEnvelope


def test_a_response_id_is_a_uuid7_that_says_when_it_was_made() -> None:
    ids = [new_response_id(1_764_633_600_123) for _ in range(100)]
    assert len(set(ids)) == 100
    for made in ids:
        parsed = uuid.UUID(made)
        assert parsed.version == 7 and parsed.variant == uuid.RFC_4122
        assert response_time_ms(made) == 1_764_633_600_123
    assert new_response_id(1) < new_response_id(2), "ids sort by the time they were made"
    for bad in ("not-an-id", str(uuid.uuid4()), ""):
        with pytest.raises(InvalidArgument, match="not a response id"):
            response_time_ms(bad)


def test_a_request_without_a_seed_gets_one_drawn_and_an_explicit_zero_is_kept() -> None:
    drawn = {wire.sampling(pb.Sampling(temperature=1.0)).seed for _ in range(20)}
    assert len(drawn) > 1 and all(0 <= s < 2**63 for s in drawn)
    assert wire.sampling(pb.Sampling(temperature=1.0, seed=0)).seed == 0
    again = wire.sampling_message(wire.sampling(pb.Sampling(temperature=0.7, seed=5)))
    assert again.HasField("seed") and again.seed == 5 and again.top_p == 1.0


def _record(method: str = "Generate") -> rpb.ResponseRecord:
    record = rpb.ResponseRecord(method=method, prompt="hi", continuation=" there")
    p = record.provenance
    p.response_id, p.base_fingerprint, p.engine_version = new_response_id(), "b" * 64, "e1"
    p.adapters.add(adapter="acme/tone", revision=3, weight=1.0, weights_sha256="1" * 64)
    p.adapters.add(adapter="acme/memo", revision=1, weight=0.5, weights_sha256="2" * 64)
    record.sampling.CopyFrom(pb.Sampling(max_new_tokens=4, temperature=0.8, seed=9))
    return record


def test_the_replay_names_exact_revisions_weights_and_the_seed_used() -> None:
    request = replay_request(_record())
    assert isinstance(request, pb.GenerateRequest)
    assert [(s.adapter, s.WhichOneof("at"), s.revision, s.weight) for s in request.adapters] == [
        ("acme/tone", "revision", 3, 1.0),
        ("acme/memo", "revision", 1, 0.5),
    ]
    assert request.prompt == "hi" and request.sampling.seed == 9
    scored = replay_request(_record("Score"))
    assert isinstance(scored, pb.ScoreRequest) and scored.continuation == " there"
    seedless = _record()
    seedless.sampling.ClearField("seed")
    with pytest.raises(FailedPrecondition, match="no seed"):
        replay_request(seedless)


def test_differences_say_what_else_changed_between_the_runs() -> None:
    original = _record().provenance
    same = pb.OutputProvenance()
    same.CopyFrom(original)
    assert differences(original, same) == []
    other = pb.OutputProvenance()
    other.CopyFrom(original)
    other.engine_version, other.node = "e2", "n2"
    other.adapters[0].weights_sha256 = "3" * 64
    found = differences(original, other)
    assert len(found) == 3 and any("engine 'e2'" in d for d in found)
    assert any(d.startswith("adapters") for d in found)


def _published(stream: str, revision: int, sha: str) -> Recorded:
    event = RevisionPublished(revision, sha, 10, "{}", Provenance("alice"))
    event_type, version, payload = codec.encode(event)
    envelope = EventEnvelope(
        stream_id=stream, event_type=event_type, schema_version=version, payload=payload
    )
    return Recorded(envelope, Position(1, 40))


def test_the_log_must_hold_the_revision_events_a_reply_names() -> None:
    adapters = _record().provenance.adapters
    for a, offset in zip(adapters, (40, 41), strict=True):
        a.log_partition, a.log_offset = 1, offset
    log = {
        (1, 40): _published("acme/tone", 3, "1" * 64),
        (1, 41): _published("acme/memo", 1, "2" * 64),
    }
    assert log_problems(adapters, lambda p, o: log.get((p, o))) == []
    log[(1, 41)] = _published("acme/memo", 1, "9" * 64)  # other weights
    (problem,) = log_problems(adapters, lambda p, o: log.get((p, o)))
    assert problem.startswith("acme/memo@1: the event at partition 1 offset 41 published")
    del log[(1, 40)]
    adapters[1].ClearField("log_offset")
    found = log_problems(adapters, lambda p, o: log.get((p, o)))
    assert found == [
        "acme/tone@3: the log holds no RevisionPublished for it at partition 1 offset 40",
        "acme/memo@1: the reply named no log position (an old projection)",
    ]


def test_the_engine_version_names_the_lora_path_a_node_computes_by() -> None:
    assert lora_path("auto", torch.device("cpu")) == lora_path("torch", torch.device("cpu"))
    assert lora_path("torch", torch.device("cuda")) == "torch"
    named = engine_version("0.1.0", "2.9", "cpu", "float32", "torch")
    assert named == "mint 0.1.0; torch 2.9; cpu float32; lora torch"
