"""The router's view of the fleet, kept current from the status topic, and its demand
reports to the controller.

If the status topic cannot be read, the view goes stale while still looking current, so
the watch says it is unhealthy (the router then answers NOT_SERVING) and keeps trying;
it is healthy again once a read succeeds."""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence

from google.protobuf.message import DecodeError
from kafka import KafkaProducer
from kafka.errors import KafkaError

from mint.backends.kafka import KafkaConnection, durable_producer
from mint.backends.kafka_residency import ResidencyTopics, TableFollower, to_proto
from mint.domain.errors import Unavailable
from mint.serving.fleet import FleetView, NodeState
from mint.serving.placement import Group
from mint.serving.requests import RevisionRef
from mint.v1 import residency_pb2 as pb

log = logging.getLogger(__name__)
RETRY_S = 1.0
SEND_BLOCK_MS = 5_000  # how long a demand report may wait for Kafka (metadata, buffer)
OnHealth = Callable[[bool], None]


class FleetWatch:
    """FleetView plus a condition that is notified on every report. `on_health(ok)` is
    called when the watch starts or stops keeping the view current."""

    def __init__(
        self,
        kafka: KafkaConnection,
        topics: ResidencyTopics,
        silence_s: float,
        on_health: OnHealth | None = None,
    ) -> None:
        self.view = FleetView(silence_s)
        self.changed = threading.Condition()
        self.caught_up = threading.Event()  # the status table was read to its end once
        self.healthy = threading.Event()  # caught up, and the last read succeeded
        self.on_health = on_health
        self._stop = threading.Event()
        self._follower = TableFollower(kafka, topics.status)
        self._thread = threading.Thread(target=self._run, name="fleet-watch", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                try:
                    self._read()
                except Exception:  # Kafka trouble, or a bug: say so, keep trying
                    log.exception("reading the status topic failed; retrying")
                    self._set_healthy(False)
                    self._stop.wait(RETRY_S)
                else:
                    self._set_healthy(self.caught_up.is_set())
        finally:
            self._set_healthy(False)
            self._follower.close()

    def _read(self) -> None:
        reports = []
        for _, value in self._follower.poll(timeout_s=0.1):
            if value is None:
                continue
            try:
                reports.append(pb.NodeReport.FromString(value))
            except DecodeError:  # one bad record must not stop the view
                log.warning("skipped a record on the status topic that is not a NodeReport")
        if reports:
            with self.changed:
                for report in reports:
                    self.view.apply(report)
                self.changed.notify_all()
        if self._follower.caught_up:
            self.caught_up.set()

    def _set_healthy(self, ok: bool) -> None:
        if ok == self.healthy.is_set():
            return
        if ok:
            self.healthy.set()
        else:
            self.healthy.clear()
        if self.on_health is not None:
            self.on_health(ok)

    def holding(self, refs: Sequence[RevisionRef]) -> list[NodeState]:
        with self.changed:
            return self.view.holding(refs)

    def live(self) -> list[NodeState]:
        with self.changed:
            return self.view.live()

    def wait_for(self, refs: Sequence[RevisionRef], until: float) -> list[NodeState]:
        """Live nodes holding all of `refs`, waiting for reports until `until` (monotonic);
        empty if none by then. Stops early if a node reports a failed load of one."""
        with self.changed:
            while True:
                nodes = self.view.holding(refs)
                remaining = until - time.monotonic()
                if nodes or remaining <= 0 or any(self.view.failure(r) for r in refs):
                    return nodes
                self.changed.wait(timeout=min(remaining, 0.5))

    def wait_live(self, until: float) -> list[NodeState]:
        """Live nodes, waiting until `until` (monotonic) for one to report if none does."""
        with self.changed:
            while not (nodes := self.view.live()) and time.monotonic() < until:
                self.changed.wait(timeout=min(until - time.monotonic(), 0.5))
            return nodes

    def failure(self, refs: Sequence[RevisionRef]) -> str | None:
        with self.changed:
            return next((f for r in refs if (f := self.view.failure(r))), None)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


class DemandReporter:
    """Counts requests per group and reports them every `interval_s`; a miss is reported
    at once, marked `missing`, so the controller places it now."""

    def __init__(
        self, kafka: KafkaConnection, topics: ResidencyTopics, name: str, interval_s: float = 1.0
    ) -> None:
        self.topic, self.name, self.interval_s = topics.demand, name, interval_s
        # A report that cannot be sent within seconds is given up, not waited on: a cold
        # start asks within the caller's deadline, and the next report carries the rates.
        self._producer: KafkaProducer = durable_producer(kafka, max_block_ms=SEND_BLOCK_MS)
        self._counts: Counter[Group] = Counter()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="demand", daemon=True)
        self._thread.start()

    def note(self, refs: Sequence[RevisionRef]) -> None:
        if refs:
            with self._lock:
                self._counts[Group.of(refs)] += 1

    def missing(self, refs: Sequence[RevisionRef]) -> None:
        """Ask for `refs` to be placed now; Unavailable if the ask cannot be sent."""
        try:
            self._send([pb.Demand(revisions=[to_proto(r) for r in refs], requests=1, missing=True)])
        except KafkaError as exc:
            log.warning("could not ask for placement: %s", exc)
            raise Unavailable("cannot reach the event log to ask for placement; retry") from exc

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            with self._lock:
                counts, self._counts = self._counts, Counter()
            if counts:
                rate = 1 / self.interval_s
                self._send_rates(counts, rate)

    def _send_rates(self, counts: Counter[Group], rate: float) -> None:
        demands = [
            pb.Demand(revisions=[to_proto(r) for r in group.refs], requests=round(n * rate))
            for group, n in counts.items()
        ]
        try:
            self._send(demands)
        except KafkaError as exc:  # these counts are lost; the next interval reports anew
            log.warning("could not report demand: %s", exc)

    def _send(self, demands: list[pb.Demand]) -> None:
        report = pb.DemandReport(router=self.name, demands=demands)
        report.at.GetCurrentTime()
        self._producer.send(self.topic, key=b"router", value=report.SerializeToString())

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._producer.close(timeout=5)
