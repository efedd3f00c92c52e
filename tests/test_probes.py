"""The /metrics and /healthz endpoints: the projector's and the controller's, and the
gRPC servers' metrics ports; every other path is 404."""

from __future__ import annotations

import threading
import urllib.error
import urllib.request

import pytest
from prometheus_client import CollectorRegistry, Counter

from mint.probes import serve_metrics, serve_probes


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


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


@pytest.mark.parametrize("healthz", [False, True])
def test_a_grpc_servers_metrics_port_answers_its_paths_only(healthz: bool) -> None:
    """The registry's (healthz False: its health is gRPC), the router's and a node's."""
    registry = CollectorRegistry()
    Counter("mint_things", "Things", registry=registry).inc()
    server = serve_metrics(0, registry, host="127.0.0.1", healthz=healthz)
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        status, page = get(f"{base}/metrics")
        assert status == 200 and b"mint_things_total 1.0" in page
        assert get(f"{base}/metrics?name[]=mint_things_total")[0] == 200  # as a scrape may ask
        health = get(f"{base}/healthz")
        assert (health == (200, b"ok\n")) if healthz else (health[0] == 404)
        for path in ("/readyz", "/bogus", "/", "/metrics/x"):
            assert get(f"{base}{path}")[0] == 404, path
    finally:
        server.shutdown()
