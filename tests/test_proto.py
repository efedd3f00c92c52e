"""Generated code never drifts from proto/, and the envelope round-trips."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

from google.protobuf.timestamp_pb2 import Timestamp

from mint.v1 import events_pb2

REPO = Path(__file__).resolve().parents[1]


def _generator() -> ModuleType:  # proto/generate.py is a script, not a package module
    spec = importlib.util.spec_from_file_location("proto_generate", REPO / "proto" / "generate.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generated_code_matches_proto(tmp_path: Path) -> None:
    """grpc_tools protoc output in a fresh folder equals what is committed under mint/v1."""
    fresh = _generator().generate(tmp_path)
    assert fresh, "protoc generated nothing"
    for path in fresh:
        committed = REPO / path.relative_to(tmp_path)
        assert committed.exists(), f"{committed} is missing: run `make proto`"
        assert committed.read_bytes() == path.read_bytes(), f"{committed} drifted: `make proto`"
    generated = {p.relative_to(tmp_path) for p in fresh}
    stale = [
        p
        for p in (REPO / "mint" / "v1").iterdir()
        if p.is_file() and p.relative_to(REPO) not in generated
    ]
    assert not stale, f"files in mint/v1 that proto/ no longer generates: {stale}"


def test_envelope_round_trips() -> None:
    envelope = events_pb2.EventEnvelope(
        event_id="e-1",
        event_type="mint.v1.AdapterCreated",
        schema_version=1,
        stream_id="adapter-1",
        stream_version=1,
        occurred_at=Timestamp(seconds=1_700_000_000),
        actor="alice",
        prev_hash=b"",
        hash=b"\x01" * 32,
        payload=b"\x08\x01",
    )
    data = envelope.SerializeToString(deterministic=True)
    assert events_pb2.EventEnvelope.FromString(data) == envelope
