"""The controller: one active at a time (group + fencing), demand → replicas, and the
desired table it publishes, against the real Kafka."""

from __future__ import annotations

import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kafka.errors import KafkaError

from mint.backends.kafka import KafkaConnection
from mint.backends.kafka_residency import DesiredWriter, ResidencyTopics, read_table, to_proto
from mint.serving.requests import RevisionRef
from mint.v1 import residency_pb2 as pb
from services.controller.controller import Controller, ControllerConfig

pytestmark = pytest.mark.slow


def ref(i: int, base: str = "") -> RevisionRef:
    return RevisionRef(f"id{i}", f"acme/a{i}", 1, f"{i:064x}", 1000, base)


def demand(*refs: RevisionRef, requests: int = 1, missing: bool = False) -> pb.DemandReport:
    return pb.DemandReport(
        router="r",
        demands=[
            pb.Demand(revisions=[to_proto(r) for r in refs], requests=requests, missing=missing)
        ],
    )


def test_demand_sets_replicas_by_rate() -> None:
    config = ControllerConfig(KafkaConnection("unused:9092"), hot_rps=5, max_replicas=3)
    controller = Controller(config)
    controller._note(demand(ref(1), requests=1))
    (want,) = controller.wants.values()
    assert want.replicas == 1
    for _ in range(6):
        controller._note(demand(ref(1), requests=40))
    assert want.replicas == 3, "a hot adapter gets more replicas, capped"


@pytest.fixture
def topics(kafka: KafkaConnection) -> ResidencyTopics:
    t = ResidencyTopics(f"ctl-{uuid.uuid4().hex[:8]}")
    t.create(kafka)
    return t


def desired(kafka: KafkaConnection, topics: ResidencyTopics) -> dict[str, pb.ResidencyIntent]:
    table = read_table(kafka, topics.desired)
    return {k: pb.ResidencyIntent.FromString(v) for k, v in table.items()}


def report(node: str, base: str = "") -> pb.NodeReport:
    r = pb.NodeReport(
        node=node, address="127.0.0.1:1", base_fingerprint=base, budget_bytes=10**6, slots=64
    )
    r.at.GetCurrentTime()
    return r


class Running:
    def __init__(self, config: ControllerConfig) -> None:
        self.controller = Controller(config)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.controller.run, args=(self.stop,))
        self.thread.start()

    def halt(self) -> None:
        self.stop.set()
        self.thread.join(timeout=30)


class Heartbeats:
    """Status reports for `nodes` every 0.3 s, as live nodes send them; a node removed
    from `alive` goes silent, one added to `stopping` says it is stopping. `bases`: the
    base each node serves (default none)."""

    def __init__(
        self,
        producer: Any,
        topics: ResidencyTopics,
        *nodes: str,
        bases: dict[str, str] | None = None,
    ) -> None:
        self.producer, self.topics, self.bases = producer, topics, bases or {}
        self.alive, self.stopping = set(nodes), set[str]()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat)
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(0.3):
            for n in sorted(self.alive):
                r = report(n, self.bases.get(n, ""))
                r.stopping = n in self.stopping
                self.producer.send(self.topics.status, key=n.encode(), value=r.SerializeToString())

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


@pytest.fixture
def two(kafka: KafkaConnection, topics: ResidencyTopics) -> Iterator[list[Running]]:
    config = ControllerConfig(kafka, topics, f"{topics.prefix}-ctl", silence_s=1.0)
    running = [Running(config), Running(config)]
    yield running
    for r in running:
        r.halt()


def wait(condition: Callable[[], bool], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def wait_steady(condition: Callable[[], bool], hold_s: float, timeout_s: float = 60) -> None:
    """Until `condition` has held continuously for `hold_s`."""
    deadline, since = time.monotonic() + timeout_s, None
    while True:
        now = time.monotonic()
        since = (since or now) if condition() else None
        if since is not None and now - since >= hold_s:
            return
        assert now < deadline, "never held steadily"
        time.sleep(0.05)


def test_one_controller_is_active_the_other_takes_over_and_fences_it(
    kafka: KafkaConnection, topics: ResidencyTopics, two: list[Running]
) -> None:
    from mint.backends.kafka import durable_producer

    producer = durable_producer(kafka)
    producer.send(topics.status, key=b"n1", value=report("n1").SerializeToString())
    producer.flush()
    # Joining members rebalance the group; once it settles, exactly one stays active.
    wait_steady(lambda: sum(r.controller.active for r in two) == 1, hold_s=2)
    active, standby = (two[0], two[1]) if two[0].controller.active else (two[1], two[0])

    beats = Heartbeats(producer, topics, "n1")
    try:
        producer.send(
            topics.demand, key=b"router", value=demand(ref(1), missing=True).SerializeToString()
        )
        producer.flush()
        wait(lambda: "n1|id1|1" in desired(kafka, topics))
        active.halt()  # leaves the group: the standby is assigned the demand partition
        wait(lambda: standby.controller.active)
        producer.send(
            topics.demand, key=b"router", value=demand(ref(2), missing=True).SerializeToString()
        )
        producer.flush()
        wait(lambda: "n1|id2|1" in desired(kafka, topics))
        assert "n1|id1|1" in desired(kafka, topics), "the new one kept the old plan"
    finally:
        beats.close()
        producer.close()

    # A writer still holding the old transactional id's epoch is fenced.
    stale = DesiredWriter(kafka, topics, f"{topics.prefix}-ctl-writer")
    stale.activate()  # re-fences the standby's writer in turn...
    with pytest.raises(KafkaError):
        assert standby.controller._writer is not None
        standby.controller._writer.write([("n9", ref(9), False)], [], term=0)
    stale.close()
    assert "n9|id9|1" not in desired(kafka, topics)


def test_a_silent_nodes_intents_are_tombstoned_and_replaced(
    kafka: KafkaConnection, topics: ResidencyTopics
) -> None:
    config = ControllerConfig(kafka, topics, f"{topics.prefix}-ctl", silence_s=1.5)
    running = Running(config)
    from mint.backends.kafka import durable_producer

    producer = durable_producer(kafka)
    beats = Heartbeats(producer, topics, "n1", "n2")
    try:
        wait(lambda: running.controller.active)
        for i in range(10):
            producer.send(
                topics.demand, key=b"router", value=demand(ref(i), missing=True).SerializeToString()
            )
        producer.flush()
        wait(lambda: len(desired(kafka, topics)) == 10)
        table = desired(kafka, topics)
        assert {k.split("|")[0] for k in table} == {"n1", "n2"}
        beats.alive.discard("n2")
        wait(lambda: {k.split("|")[0] for k in desired(kafka, topics)} == {"n1"})
        assert len(desired(kafka, topics)) == 10, "every adapter placed again"
    finally:
        beats.close()
        running.halt()
        producer.close()


def test_a_hot_adapter_gets_replicas_on_distinct_nodes_and_the_metrics_say_so(
    kafka: KafkaConnection, topics: ResidencyTopics
) -> None:
    from mint.backends.kafka import durable_producer
    from mint.probes import serve_probes

    config = ControllerConfig(
        kafka, topics, f"{topics.prefix}-ctl", silence_s=1.0, hot_rps=5, max_replicas=2
    )
    running = Running(config)
    server = serve_probes(0, running.controller.metrics.render, running.controller.metrics.problem)
    base = f"http://127.0.0.1:{server.server_address[1]}"
    producer = durable_producer(kafka)

    def nodes_holding(i: int) -> set[str]:
        return {k.split("|")[0] for k in desired(kafka, topics) if f"|id{i}|" in k}

    def send(*reports: pb.DemandReport) -> None:
        for r in reports:
            producer.send(topics.demand, key=b"router", value=r.SerializeToString())
        producer.flush()

    beats = Heartbeats(producer, topics, "n1", "n2", "n3")
    try:
        wait(lambda: running.controller.active)
        send(demand(ref(1), missing=True), demand(ref(2), missing=True))
        wait(lambda: len(nodes_holding(1)) == 1 and len(nodes_holding(2)) == 1)
        send(*[demand(ref(1), requests=40) for _ in range(3)])  # 40 requests/s: hot
        wait(lambda: len(nodes_holding(1)) == 2)
        assert len(nodes_holding(2)) == 1, "only the hot adapter gets a replica"

        with urllib.request.urlopen(f"{base}/metrics", timeout=5) as answer:
            text = answer.read().decode()
        for line in (
            "mint_controller_active 1.0",
            "mint_controller_hot_groups 1.0",
            "mint_controller_intents 3.0",
            "mint_controller_live_nodes 3.0",
        ):
            assert line in text, line
        with urllib.request.urlopen(f"{base}/healthz", timeout=5) as answer:
            assert answer.status == 200

        # Cooled down: no longer hot. (The extra copy stays until its node needs the room.)
        send(*[demand(ref(1), requests=0) for _ in range(6)])
        wait(lambda: b"mint_controller_hot_groups 0.0" in running.controller.metrics.render())
    finally:
        beats.close()
        running.halt()
        server.shutdown()
        producer.close()


def test_health_fails_when_the_control_loop_stops_turning() -> None:
    metrics = Controller(ControllerConfig(KafkaConnection("unused:9092"))).metrics
    metrics.turned()
    assert metrics.problem() is None
    metrics._last_turn -= 60
    assert "idle" in (metrics.problem() or "")


def test_a_node_saying_it_stops_has_its_adapters_placed_again_before_it_goes_silent(
    kafka: KafkaConnection, topics: ResidencyTopics
) -> None:
    from mint.backends.kafka import durable_producer

    # Silence would take 60 s: only the node's own word can move its adapters sooner.
    config = ControllerConfig(kafka, topics, f"{topics.prefix}-ctl", silence_s=60)
    running = Running(config)
    producer = durable_producer(kafka)
    beats = Heartbeats(producer, topics, "n1", "n2")
    running.controller._started -= 60  # as if the fleet had been watched for a while
    try:
        wait(lambda: running.controller.active)
        for i in range(8):
            producer.send(
                topics.demand, key=b"router", value=demand(ref(i), missing=True).SerializeToString()
            )
        producer.flush()
        wait(lambda: {k.split("|")[0] for k in desired(kafka, topics)} == {"n1", "n2"})
        started = time.monotonic()
        beats.stopping.add("n2")
        wait(lambda: {k.split("|")[0] for k in desired(kafka, topics)} == {"n1"})
        assert time.monotonic() - started < 10
        assert len(desired(kafka, topics)) == 8, "every adapter placed again"
    finally:
        beats.close()
        running.halt()
        producer.close()


def test_adapters_are_placed_only_on_nodes_serving_their_base(
    kafka: KafkaConnection, topics: ResidencyTopics
) -> None:
    from mint.backends.kafka import durable_producer

    config = ControllerConfig(kafka, topics, f"{topics.prefix}-ctl", silence_s=1.5)
    running = Running(config)
    producer = durable_producer(kafka)
    beats = Heartbeats(producer, topics, "n1", "n2", bases={"n1": "base-a", "n2": "base-b"})
    on_a = [ref(i, "base-a") for i in range(6)]
    on_b = [ref(i, "base-b") for i in range(6, 12)]
    unserved = ref(12, "base-c")
    try:
        wait(lambda: running.controller.active)
        for r in [*on_a, *on_b, unserved]:
            producer.send(
                topics.demand, key=b"router", value=demand(r, missing=True).SerializeToString()
            )
        producer.flush()
        wait(lambda: len(desired(kafka, topics)) >= 12)
        time.sleep(1)  # a few more re-plans: the unserved one stays unplaced
        table = desired(kafka, topics)
        assert set(table) == {f"n1|{r.adapter_id}|1" for r in on_a} | {
            f"n2|{r.adapter_id}|1" for r in on_b
        }
    finally:
        beats.close()
        running.halt()
        producer.close()
