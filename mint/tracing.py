"""Optional OpenTelemetry tracing (the `otel` extra, `--otel`): each RPC a MinT server
takes becomes a server span that continues the caller's trace (W3C `traceparent`
metadata), and its trace id becomes the call's request id (unless the caller sent one)
and the correlation id of the events it appends.

MinT uses only the OpenTelemetry API; where spans go is the deployment's choice: run a
service under `opentelemetry-instrument` (opentelemetry-distro and an exporter, set up by
the OTEL_* variables), or give `enable` a configured SDK provider. Off (the default), or
without the package, nothing is imported and every function here costs a lookup."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from typing import Any

log = logging.getLogger(__name__)

_tracer: Any = None  # an opentelemetry Tracer while enabled


def enable(on: bool, provider: Any = None) -> bool:
    """Trace RPCs from now on if `on` (with `provider`, else the global one); False when
    asked to but the package is missing (said once in the log)."""
    global _tracer
    if not on:
        _tracer = None
        return False
    try:
        from opentelemetry import trace
    except ImportError:
        log.warning(
            "--otel is set but opentelemetry-api is not installed: pip install 'mint[otel]'"
        )
        return False
    _tracer = trace.get_tracer("mint", tracer_provider=provider)
    return True


@contextlib.contextmanager
def rpc_span(method: str, metadata: Sequence[tuple[str, str | bytes]]) -> Iterator[None]:
    """The span of one RPC (nothing while tracing is off), a child of the caller's."""
    if _tracer is None:
        yield
        return
    from opentelemetry import propagate, trace

    carrier = {k: v for k, v in metadata if isinstance(v, str)}
    with _tracer.start_as_current_span(
        method.lstrip("/"), context=propagate.extract(carrier), kind=trace.SpanKind.SERVER
    ):
        yield


def current_trace_id() -> str | None:
    """The current span's trace id (32 hex digits), None while tracing is off or outside
    a span."""
    if _tracer is None:
        return None
    from opentelemetry import trace

    context = trace.get_current_span().get_span_context()
    return trace.format_trace_id(context.trace_id) if context.is_valid else None
