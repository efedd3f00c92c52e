"""Optional OpenTelemetry tracing (`--otel`, mint/tracing.py): each RPC is a server span
continuing the caller's trace, and its trace id is the correlation id of the events the
call appends and the request id of its log lines. A real gRPC call to a registry (the
embedded back end: what is traced is the RPC layer's, whatever the log)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, format_span_id, format_trace_id

from mint import logs, tracing
from mint.backends.local_blobs import LocalBlobStore
from mint.backends.sqlite_log import SqliteEventLog
from mint.catalog.log_scan import LogScanCatalog
from mint.registry import Principal, Registry
from mint.rpc.auth import TokenTable, token_digest
from mint.v1 import events_pb2, registry_pb2_grpc
from mint.v1 import registry_pb2 as pb
from services.registry.server import build_server
from tests.keys import TEST_KEK
from tests.logged_rpc import ALICE, captured_logs, create, said, serve_logged

ROOT = ("authorization", "Bearer root-token")
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"
TRACEPARENT = ("traceparent", f"00-{TRACE_ID}-{CALLER_SPAN}-01")


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    assert tracing.enable(True, provider)
    yield exporter
    tracing.enable(False)


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[tuple[SqliteEventLog, pb.BaseModel, int]]:
    log = SqliteEventLog(tmp_path / "events.db")
    tokens = TokenTable([(token_digest("root-token"), Principal("root", frozenset("*"), True))])
    server, port = build_server(
        Registry(log, LocalBlobStore(tmp_path, TEST_KEK), catalog=LogScanCatalog(log)),
        tokens,
        drain_s=0,
    )
    base = pb.BaseModel(name="b", fingerprint="a" * 64)
    base.parameters["w"].CopyFrom(events_pb2.Shape(dims=[2, 2]))
    yield log, base, port
    server.stop(0)
    log.close()


def register(port: int, base: pb.BaseModel, request_id: str, *metadata: tuple[str, str]) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = registry_pb2_grpc.RegistryStub(channel)
        request = pb.RegisterBaseModelRequest(base=base, request_id=request_id)
        stub.RegisterBaseModel(request, metadata=(ROOT, *metadata), timeout=10)


def test_an_rpc_is_a_span_of_the_callers_trace_and_its_events_carry_the_trace_id(
    spans: InMemorySpanExporter, registry: tuple[SqliteEventLog, pb.BaseModel, int]
) -> None:
    log, base, port = registry
    register(port, base, "reg-1", TRACEPARENT)
    [span] = [s for s in spans.get_finished_spans() if s.name.endswith("/RegisterBaseModel")]
    assert span.kind == SpanKind.SERVER and span.context is not None and span.parent
    assert format_trace_id(span.context.trace_id) == TRACE_ID
    assert format_span_id(span.parent.span_id) == CALLER_SPAN
    [event] = list(log.read_all())
    assert event.envelope.correlation_id == TRACE_ID
    assert event.envelope.request_id == "reg-1"  # the command's own, for its retries
    assert tracing.current_trace_id() is None  # outside the call


def test_the_trace_id_is_the_request_id_of_the_calls_lines(spans: InMemorySpanExporter) -> None:
    server = serve_logged()
    with (
        captured_logs(logs.LogConfig(format="json")) as stream,
        grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel,
    ):
        try:
            request = pb.CreateAdapterRequest(request_id="cmd-1")
            create(channel)(request, metadata=(ALICE, TRACEPARENT), timeout=10)
        finally:
            server.stop(0)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    [line] = [line for line in lines if line["logger"] == said.name]
    assert line["request_id"] == TRACE_ID  # before the command's: it joins logs to traces


def test_without_otel_nothing_is_traced(registry: tuple[SqliteEventLog, pb.BaseModel, int]) -> None:
    log, base, port = registry
    register(port, base, "reg-2", TRACEPARENT)
    [event] = list(log.read_all())
    assert event.envelope.correlation_id == ""
