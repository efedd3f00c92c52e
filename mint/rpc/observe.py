"""Request metrics for gRPC servicers: latency and a count by outcome, one block per call."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import Counter, Histogram


@contextmanager
def observed(latency: Histogram, requests: Counter, method: str) -> Iterator[None]:
    """Times the block into `latency{method}` and counts it in `requests{method, code}`,
    code being "OK" or the name of the exception that ended it."""
    started, code = time.perf_counter(), "OK"
    try:
        yield
    except BaseException as exc:
        code = type(exc).__name__
        raise
    finally:
        latency.labels(method).observe(time.perf_counter() - started)
        requests.labels(method, code).inc()
