"""Apache Kafka 4.x in KRaft combined mode, from the Maven Central jars.

The jars are resolved once with Maven (`kafka/pom.xml`) into the download cache and
reused. Each node is a combined broker+controller; one node for tests, three (replication
3, min.insync.replicas 2) for fault tests. A node may also listen with SASL_PLAINTEXT
(mechanism PLAIN) for the cluster's `sasl_users`, to test authenticated clients.
"""

from __future__ import annotations

import base64
import hashlib
import shutil
import subprocess
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from .procs import Managed

HERE = Path(__file__).resolve().parent
POM = HERE / "kafka" / "pom.xml"
LOG4J = HERE / "kafka" / "log4j2.yaml"
JVM_OPTS = ["-Xms1g", "-Xmx1g", "-XX:+UseG1GC", "-Djava.awt.headless=true"]


class StartError(RuntimeError):
    """A server did not come up; the message names it and its log."""


def fetch_jars(cache: Path) -> Path:
    """Resolve the broker's jars into cache (once per pom version); return the libs folder."""
    key = hashlib.sha256(POM.read_bytes()).hexdigest()[:12]
    libs = cache / "kafka" / key / "libs"
    done = libs.parent / ".complete"
    if done.exists():
        return libs
    if shutil.which("mvn") is None:
        raise StartError("Kafka: Maven (`mvn`) is needed once to fetch the broker jars; install it")
    if shutil.which("java") is None:
        raise StartError("Kafka: Java 17+ (`java`) is needed to run the broker; install it")
    shutil.rmtree(libs, ignore_errors=True)
    print(f"fetching Kafka jars from Maven Central into {libs} (once) ...", flush=True)
    cmd = [
        "mvn",
        "-B",
        "-q",
        "-f",
        str(POM),
        "dependency:copy-dependencies",
        f"-Dmaven.repo.local={cache / 'm2'}",  # every download under the one cache folder
        "-DincludeScope=runtime",
        f"-DoutputDirectory={libs}",
    ]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise StartError(f"Kafka: fetching jars failed:\n{result.stdout}\n{result.stderr}")
    done.touch()
    return libs


@dataclass(frozen=True)
class KafkaNode:
    node_id: int
    port: int
    controller_port: int
    state_dir: Path
    sasl_port: int | None = None  # also a SASL_PLAINTEXT listener here

    @property
    def process(self) -> Managed:
        return Managed(f"kafka-{self.node_id}", self.state_dir)

    @property
    def data_dir(self) -> Path:
        return self.state_dir / f"kafka-{self.node_id}-data"

    @property
    def config_file(self) -> Path:
        return self.state_dir / f"kafka-{self.node_id}.properties"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def listeners(self) -> dict[str, str]:
        """Listener name -> address the clients use (the controller's is apart)."""
        found = {"PLAINTEXT": self.address}
        if self.sasl_port is not None:
            found["SASL_PLAINTEXT"] = f"127.0.0.1:{self.sasl_port}"
        return found


@dataclass(frozen=True)
class KafkaCluster:
    nodes: tuple[KafkaNode, ...]
    cluster_id: str
    sasl_users: tuple[tuple[str, str], ...] = ()  # (user, password) the SASL listeners take
    # ACLs enforced (KRaft's StandardAuthorizer): the PLAINTEXT listener's ANONYMOUS is a
    # super user, and a resource no ACL names stays open to everyone.
    authorizer: bool = False

    @property
    def bootstrap(self) -> str:
        return ",".join(n.address for n in self.nodes)

    @property
    def sasl_bootstrap(self) -> str:
        return ",".join(n.listeners()["SASL_PLAINTEXT"] for n in self.nodes if n.sasl_port)

    def write_configs(self) -> None:
        size = len(self.nodes)
        voters = ",".join(f"{n.node_id}@127.0.0.1:{n.controller_port}" for n in self.nodes)
        min_isr = 2 if size >= 3 else 1
        for node in self.nodes:
            served = [f"{name}://{address}" for name, address in node.listeners().items()]
            protocols = [f"{name}:{name}" for name in node.listeners()]
            props = {
                "process.roles": "broker,controller",
                "node.id": node.node_id,
                "controller.quorum.voters": voters,
                "listeners": ",".join([*served, f"CONTROLLER://127.0.0.1:{node.controller_port}"]),
                "advertised.listeners": ",".join(served),
                "controller.listener.names": "CONTROLLER",
                "inter.broker.listener.name": "PLAINTEXT",
                "listener.security.protocol.map": ",".join([*protocols, "CONTROLLER:PLAINTEXT"]),
                **self._sasl_props(node),
                **self._authorizer_props(),
                "log.dirs": node.data_dir,
                "num.partitions": 1,
                "default.replication.factor": size,
                "min.insync.replicas": min_isr,
                "offsets.topic.replication.factor": size,
                "transaction.state.log.replication.factor": size,
                "transaction.state.log.min.isr": min_isr,
                "share.coordinator.state.topic.replication.factor": size,
                "share.coordinator.state.topic.min.isr": min_isr,
                "group.initial.rebalance.delay.ms": 0,
                "auto.create.topics.enable": "false",
                # A dead broker is noticed, and its leaderships and coordinators moved,
                # after 6 s without a heartbeat (Kafka's default, 9 s, adds 3 s to every
                # recovery the fault tests measure; operators choose theirs).
                "broker.session.timeout.ms": 6000,
                "broker.heartbeat.interval.ms": 1000,
            }
            node.config_file.write_text("".join(f"{k}={v}\n" for k, v in props.items()))

    def _authorizer_props(self) -> dict[str, str]:
        if not self.authorizer:
            return {}
        return {
            "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            "allow.everyone.if.no.acl.found": "true",
            "super.users": "User:ANONYMOUS",
        }

    def _sasl_props(self, node: KafkaNode) -> dict[str, str]:
        if node.sasl_port is None:
            return {}
        users = " ".join(f'user_{name}="{password}"' for name, password in self.sasl_users)
        return {
            "sasl.enabled.mechanisms": "PLAIN",
            "listener.name.sasl_plaintext.plain.sasl.jaas.config": (
                f"org.apache.kafka.common.security.plain.PlainLoginModule required {users};"
            ),
        }

    def format_storage(self, libs: Path) -> None:
        for node in self.nodes:
            if (node.data_dir / "meta.properties").exists():
                continue
            cmd = [
                "java",
                "-cp",
                f"{libs}/*",
                "kafka.tools.StorageTool",
                "format",
                # "=" form: a random id may begin with "-", which argparse reads as an option
                f"--cluster-id={self.cluster_id}",
                f"--config={node.config_file}",
            ]
            result = subprocess.run(cmd, capture_output=True, text=True)
            if result.returncode != 0:
                raise StartError(
                    f"Kafka node {node.node_id}: formatting storage failed:\n{result.stdout}"
                    f"{result.stderr}"
                )

    def start(self, libs: Path) -> None:
        for node in self.nodes:
            if node.process.running():
                continue
            node.process.start(
                [
                    "java",
                    *JVM_OPTS,
                    f"-Dlog4j2.configurationFile={LOG4J}",
                    f"-Dkafka.logs.dir={self.nodes[0].state_dir}",
                    "-cp",
                    f"{libs}/*",
                    "kafka.Kafka",
                    str(node.config_file),
                ]
            )

    def wait_ready(self, timeout_s: float = 90.0) -> None:
        """Wait until every broker is registered and a metadata round trip succeeds."""
        from kafka.errors import KafkaError

        from mint.backends.kafka import KafkaConnection, broker_ids

        deadline = time.monotonic() + timeout_s
        want = {n.node_id for n in self.nodes}
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            for node in self.nodes:
                if not node.process.running():
                    raise StartError(
                        f"Kafka node {node.node_id} exited during start-up; log: "
                        f"{node.process.log_file}\n{node.process.log_tail()}"
                    )
            try:
                if want <= broker_ids(KafkaConnection(self.bootstrap), timeout_s=5):
                    return
            except (KafkaError, OSError) as exc:  # not up yet: poll until the deadline
                last_error = exc
            time.sleep(0.5)
        logs = ", ".join(str(n.process.log_file) for n in self.nodes)
        raise StartError(
            f"Kafka did not become ready within {timeout_s:.0f} s ({last_error}); logs: {logs}\n"
            f"{self.nodes[0].process.log_tail()}"
        )

    def stop(self) -> list[str]:
        """Stop every node at once: one after another, the last waits out its grace for a
        controller quorum that left before it (20 s of a 3-broker stop's 21; at once, 6)."""
        with ThreadPoolExecutor(len(self.nodes)) as pool:
            stopped = list(pool.map(lambda n: n.process.stop(), self.nodes))
        return [n.process.name for n, was in zip(self.nodes, stopped, strict=True) if was]


def new_cluster_id() -> str:
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
