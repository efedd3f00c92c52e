"""The local stack scripts themselves: start, fail loudly, stop cleanly (3-broker mode:
tests/faults, whose cluster is one).

These start servers of their own in a temporary state directory, beside the shared ones.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from kafka.errors import KafkaError
from urllib3.exceptions import HTTPError

from deploy.local.kafka import KafkaCluster, KafkaNode, fetch_jars
from deploy.local.stack import Stack, default_cache, free_ports
from mint.backends.s3 import S3Settings
from tests.infra.smoke import kafka_round_trip, s3_round_trip

pytestmark = pytest.mark.slow


@pytest.fixture
def own_stack(tmp_path: Path) -> Iterator[Stack]:
    stack = Stack(tmp_path / "stack")
    yield stack
    stack.down()


def _settings(stack: Stack) -> S3Settings:
    e = stack.endpoints
    return S3Settings(e.s3_endpoint, e.s3_access_key, e.s3_secret_key)


def _pids(stack: Stack) -> list[int]:
    procs = [n.process for n in stack.kafka.nodes] + [stack.s3.process]
    return [pid for p in procs if (pid := p.pid()) is not None]


def test_up_is_idempotent_and_down_leaves_nothing_running(own_stack: Stack) -> None:
    own_stack.up()
    pids = _pids(own_stack)
    assert len(pids) == 2
    own_stack.up()  # a second up changes nothing
    assert _pids(own_stack) == pids
    assert kafka_round_trip(own_stack.endpoints.kafka(), records=3) == [b"v0", b"v1", b"v2"]
    assert s3_round_trip(_settings(own_stack)) == b"hello"

    assert sorted(own_stack.down()) == ["kafka-1", "s3"]
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text()
    assert not any(own_stack.running().values())

    # The smoke checks fail against the stopped servers rather than passing vacuously.
    with pytest.raises((KafkaError, OSError)):
        kafka_round_trip(own_stack.endpoints.kafka(), timeout_s=3)
    with pytest.raises((HTTPError, OSError)):
        s3_round_trip(_settings(own_stack), timeout_s=3)


def test_failed_start_names_the_server_and_its_log(tmp_path: Path) -> None:
    state = tmp_path / "stack"
    stack = Stack(state)
    with socket.socket() as squatter:  # take Kafka's port before the broker can
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", stack.kafka.nodes[0].port))
        squatter.listen()
        result = subprocess.run(
            [sys.executable, "-m", "deploy.local", "up", "--state-dir", str(state)],
            capture_output=True,
            text=True,
            timeout=240,
            env=os.environ,
        )
    assert result.returncode == 1
    assert "Kafka" in result.stderr
    assert str(stack.kafka.nodes[0].process.log_file) in result.stderr
    assert not any(stack.running().values()), "a failed up must stop what it started"


def test_storage_formats_with_a_cluster_id_that_begins_with_a_dash(tmp_path: Path) -> None:
    # About one random id in 64 begins with "-"; the formatter must not read it as an option.
    port, controller_port = free_ports(2)
    cluster = KafkaCluster(
        nodes=(KafkaNode(1, port, controller_port, tmp_path),),
        cluster_id="-097AqMLQGGKPHIVafEhSQ",
    )
    cluster.write_configs()
    cluster.format_storage(fetch_jars(default_cache()))
    meta = (cluster.nodes[0].data_dir / "meta.properties").read_text()
    assert "cluster.id=-097AqMLQGGKPHIVafEhSQ" in meta
