"""The local stack: Kafka (1 or 3 nodes) and S3 under one state directory.

`up` is idempotent: ports, cluster id and credentials are chosen once and kept in
`stack.json`, servers already running are left alone, and it returns only when every
server answers. `down` stops exactly the processes recorded in the pid files.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from mint.backends.kafka import KafkaConnection
from mint.backends.s3 import S3Settings

from .kafka import KafkaCluster, KafkaNode, fetch_jars, new_cluster_id
from .s3 import S3Server

S3_PORTS = 8


def default_cache() -> Path:
    return Path(os.environ.get("MINT_CACHE", Path.home() / ".cache" / "mint"))


def free_ports(count: int) -> list[int]:
    """`count` distinct ports that were free a moment ago on 127.0.0.1."""
    with ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(count)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]


@dataclass(frozen=True)
class Endpoints:
    """What a client needs to reach the stack; also exported as the MINT_* variables of
    the settings with these names."""

    kafka_bootstrap: str
    s3_endpoint: str
    s3_access_key: str
    s3_secret_key: str

    def as_env(self) -> dict[str, str]:
        return {f"MINT_{name.upper()}": value for name, value in asdict(self).items()}

    def kafka(self) -> KafkaConnection:
        return KafkaConnection(self.kafka_bootstrap)

    def s3(self) -> S3Settings:
        return S3Settings(self.s3_endpoint, self.s3_access_key, self.s3_secret_key)


ENDPOINT_VARIABLES = tuple(f"MINT_{field.name.upper()}" for field in fields(Endpoints))


class Stack:
    def __init__(self, state_dir: Path, brokers: int = 1, cache: Path | None = None) -> None:
        if brokers not in (1, 3):
            raise ValueError("brokers must be 1 (tests) or 3 (fault tests)")
        self.state_dir = state_dir.resolve()
        self.cache = cache or default_cache()
        self.spec = self._load_or_create_spec(brokers)
        self.kafka = KafkaCluster(
            tuple(
                KafkaNode(i + 1, port, cport, self.state_dir)
                for i, (port, cport) in enumerate(self.spec["kafka_ports"])
            ),
            self.spec["cluster_id"],
        )
        self.s3 = S3Server(
            tuple(self.spec["s3_ports"]), self.state_dir, "mint", self.spec["s3_secret"]
        )

    def _load_or_create_spec(self, brokers: int) -> dict[str, Any]:
        spec_file = self.state_dir / "stack.json"
        if spec_file.exists():
            spec: dict[str, Any] = json.loads(spec_file.read_text())
            if len(spec["kafka_ports"]) != brokers:
                raise ValueError(
                    f"{self.state_dir} holds a {len(spec['kafka_ports'])}-broker stack; "
                    "run `down` and remove it, or use another --state-dir"
                )
            return spec
        ports = free_ports(2 * brokers + S3_PORTS)
        spec = {
            "cluster_id": new_cluster_id(),
            "kafka_ports": [ports[2 * i : 2 * i + 2] for i in range(brokers)],
            "s3_ports": ports[2 * brokers :],
            "s3_secret": secrets.token_hex(16),
        }
        self.state_dir.mkdir(parents=True, exist_ok=True)
        spec_file.write_text(json.dumps(spec, indent=2))
        return spec

    @property
    def endpoints(self) -> Endpoints:
        return Endpoints(
            self.kafka.bootstrap, self.s3.endpoint, self.s3.access_key, self.s3.secret_key
        )

    def up(self) -> float:
        """Start whatever is not running and wait until all answer; return seconds taken."""
        libs = fetch_jars(self.cache)
        started = time.monotonic()
        self.s3.start()  # S3 starts in the background while Kafka formats
        self.kafka.write_configs()
        self.kafka.format_storage(libs)
        self.kafka.start(libs)
        self.s3.wait_ready()
        self.kafka.wait_ready()
        (self.state_dir / "endpoints.json").write_text(
            json.dumps(self.endpoints.as_env(), indent=2)
        )
        return time.monotonic() - started

    def down(self) -> list[str]:
        """Stop every process this stack started, Kafka and S3 at once; return the names
        of those stopped."""
        with ThreadPoolExecutor(2) as pool:
            kafka, s3 = pool.submit(self.kafka.stop), pool.submit(self.s3.stop)
            return kafka.result() + s3.result()

    def running(self) -> dict[str, bool]:
        procs = [n.process for n in self.kafka.nodes] + [self.s3.process]
        return {p.name: p.running() for p in procs}
