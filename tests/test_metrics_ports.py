"""A gRPC server's metrics port answers /metrics (the router's and a node's also
/healthz), and 404 on any other path: a probe or a typo asking it for /readyz or /bogus
is not told 200 with the metrics page. The registry's, from its real entry point (the
embedded back end: no Kafka or S3); the router's and the node's use the same server
(tests/test_probes.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from deploy.local.registry import write_tokens
from deploy.local.stack import free_ports


def status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as err:
        return err.code


@pytest.fixture
def registry_metrics(tmp_path: Path) -> Iterator[str]:
    """The base URL of a running embedded registry's metrics port."""
    tokens = write_tokens(tmp_path / "tokens.json", {"t": {"principal": "p", "tenants": ["*"]}})
    port, metrics = free_ports(2)
    command = [sys.executable, "-m", "services.registry", "serve", "--backend", "embedded"]
    command += ["--data-dir", str(tmp_path / "registry"), "--tokens-file", str(tokens)]
    command += ["--port", str(port), "--metrics-port", str(metrics)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MINT_")}
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env) as proc:
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()  # after the metrics server has started
            assert "registry serving on" in line, line
            yield f"http://127.0.0.1:{metrics}"
        finally:
            proc.terminate()
            proc.wait(timeout=30)


def test_the_registrys_metrics_port_answers_metrics_only(registry_metrics: str) -> None:
    assert status(f"{registry_metrics}/metrics") == 200
    for path in ("/healthz", "/readyz", "/bogus"):  # its health is gRPC (DESIGN)
        assert status(f"{registry_metrics}{path}") == 404, path
