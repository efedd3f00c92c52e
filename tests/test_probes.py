"""The /metrics and /healthz endpoint the projector and the controller serve."""

from __future__ import annotations

import threading
import urllib.error
import urllib.request

import pytest

from mint.probes import serve_probes


def test_health_answers_503_with_the_reason_and_unknown_paths_404() -> None:
    problem: list[str] = []
    server = serve_probes(
        0, lambda: b"up 1\n", lambda: problem[0] if problem else None, host="127.0.0.1"
    )
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        with urllib.request.urlopen(f"{base}/metrics", timeout=5) as answer:
            assert answer.read() == b"up 1\n"
            assert answer.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        with urllib.request.urlopen(f"{base}/healthz", timeout=5) as answer:
            assert answer.read() == b"ok\n"
        problem.append("control loop idle for 31 s")
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(f"{base}/healthz", timeout=5)
        assert err.value.code == 503
        assert err.value.read() == b"control loop idle for 31 s\n"
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(f"{base}/other", timeout=5)
        assert err.value.code == 404
    finally:
        server.shutdown()


def test_readiness_fails_once_draining_and_when_unhealthy() -> None:
    draining = threading.Event()
    problem: list[str] = []
    server = serve_probes(
        0,
        lambda: b"",
        lambda: problem[0] if problem else None,
        host="127.0.0.1",
        draining=draining,
    )
    ready = f"http://127.0.0.1:{server.server_address[1]}/readyz"
    try:
        with urllib.request.urlopen(ready, timeout=5) as answer:
            assert answer.read() == b"ok\n"
        problem.append("degraded: S3 unreachable")
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(ready, timeout=5)
        assert err.value.read() == b"degraded: S3 unreachable\n"
        problem.clear()
        draining.set()  # what SIGTERM does
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(ready, timeout=5)
        assert (err.value.code, err.value.read()) == (503, b"draining\n")
        base = ready.removesuffix("/readyz")
        with urllib.request.urlopen(f"{base}/healthz", timeout=5) as answer:
            assert answer.read() == b"ok\n"  # alive all the same: no restart
    finally:
        server.shutdown()
