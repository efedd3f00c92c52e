"""Carries out desired residency: follows the desired topic, loads what this node should
hold (disk tier or S3 GET, sha256, parse, into host memory and a slot), evicts what it
should not, and reports what each tier holds.

Erasure notices (mint/serving/erasures.py) are followed beside the intents: an erased
adapter's revisions leave the node at once (slots, host memory, disk cache), its
intents are ignored from then on, and a node starting reads every notice before it loads
anything.

Reports go to the status topic (key: the node) every `report_s` and after each change:
the whole resident set plus the outcomes since the last report. A report is also the
heartbeat: the controller re-places a node's adapters when its reports stop. So reports
have a thread of their own, and loads run on a small pool (`max_loads` at once), never
on the thread that reads intents or the one that reports: a few large loads must not make
a busy node look dead.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from google.protobuf.timestamp_pb2 import Timestamp
from kafka import KafkaProducer

from mint.backends.kafka import KafkaConnection, durable_producer
from mint.backends.kafka_residency import ResidencyTopics, TableFollower, from_proto, to_proto
from mint.serving.catalog import Catalog
from mint.serving.device import dtype_name
from mint.serving.disk_cache import DiskCache
from mint.serving.engine import ServingEngine, key_of
from mint.serving.erasures import ErasureNotice
from mint.serving.host_reserve import HostReserve
from mint.serving.loading import fetch_revision
from mint.serving.requests import RevisionRef
from mint.serving.residency import ResidentKey
from mint.v1 import residency_pb2 as pb

from .metrics import NodeMetrics

log = logging.getLogger(__name__)
RETRY_FAILED_S = 30.0
MAX_LOADS = 4  # S3 GETs overlap well; parsing and copying share the cores beyond that
# Reports after changes come at most this often: a report lists every resident revision
# under the engine's lock, so one per load would make a burst of loads quadratic.
REPORT_GAP_S = 0.05
Outcome = pb.LoadOutcome


class Reconciler:
    def __init__(
        self,
        node: str,
        address: str,
        engine: ServingEngine,
        catalog: Catalog,
        kafka: KafkaConnection,
        topics: ResidencyTopics,
        metrics: NodeMetrics,
        report_s: float = 1.0,
        disk: DiskCache | None = None,
        max_loads: int = MAX_LOADS,
        reserve: HostReserve | None = None,
    ) -> None:
        self.node, self.address, self.engine, self.catalog = node, address, engine, catalog
        self.kafka, self.topics, self.metrics, self.report_s = (
            kafka,
            topics,
            metrics,
            report_s,
        )
        self.disk, self.reserve = disk, reserve
        self.desired: dict[ResidentKey, tuple[RevisionRef, pb.ResidencyIntent]] = {}
        self.erased: dict[str, ErasureNotice] = {}  # adapter id -> its notice
        self._lock = threading.Lock()  # the three below: the loads' threads share them
        self._failed: dict[ResidentKey, float] = {}
        self._loading: set[ResidentKey] = set()
        self._outcomes: list[pb.LoadOutcome] = []
        self._stop = threading.Event()
        self._report_now = threading.Event()
        self.ready = threading.Event()  # set once the desired table was read to its end
        self._producer: KafkaProducer = durable_producer(kafka)
        self._loads = ThreadPoolExecutor(max_workers=max_loads, thread_name_prefix="load")
        self._thread = threading.Thread(target=self._run, name="reconciler", daemon=True)
        self._heartbeat = threading.Thread(target=self._beat, name="heartbeat", daemon=True)

    def start(self) -> None:
        self._heartbeat.start()
        self._thread.start()

    def stop(self) -> None:
        """Say goodbye (the controller re-places at once) and stop."""
        self._stop.set()
        self._report_now.set()
        self._thread.join(timeout=10)
        # Loads under way are not waited for (an S3 GET may take many seconds): the
        # goodbye goes out now, before the pod's grace period ends.
        self._loads.shutdown(wait=False, cancel_futures=True)
        self._heartbeat.join(timeout=10)
        self._report(stopping=True)
        self._producer.flush(timeout=5)
        self._producer.close(timeout=5)

    def _run(self) -> None:
        follower = TableFollower(self.kafka, self.topics.desired)
        erasures = TableFollower(self.kafka, self.topics.erased)
        try:
            while not self._stop.is_set():
                try:
                    self._read_erasures(erasures)
                    self._read(follower)
                    if follower.caught_up and erasures.caught_up:
                        self.ready.set()
                        self._reconcile()
                except Exception:  # Kafka or S3 trouble: keep going, it is usually passing
                    log.exception("reconcile step failed; retrying in a second")
                    self._stop.wait(1.0)
        finally:
            follower.close()
            erasures.close()

    def _read_erasures(self, follower: TableFollower) -> None:
        for adapter_id, value in follower.poll(timeout_s=0 if follower.caught_up else 0.1):
            if value is None or adapter_id in self.erased:
                continue
            notice = ErasureNotice.decode(adapter_id, value)
            self.erased[adapter_id] = notice
            for key in [k for k in self.desired if k.adapter_id == adapter_id]:
                del self.desired[key]  # the reconcile evicts it, as any undesired revision
            self._forget_files(notice)
            log.info("%s was erased: dropping it", notice.adapter)

    def _forget_files(self, notice: ErasureNotice) -> None:
        if self.disk is not None:
            for sha256 in notice.weights_sha256:
                self.disk.drop(sha256)

    def _beat(self) -> None:
        """A report every `report_s`, and at once after a change, whatever loads run."""
        while not self._stop.is_set():
            self._report_now.clear()
            try:
                self._report()
            except Exception:  # Kafka trouble: the next beat tries again
                log.exception("sending the node's report failed")
            self._report_now.wait(self.report_s)
            self._stop.wait(REPORT_GAP_S)

    def _read(self, follower: TableFollower) -> None:
        for key, value in follower.poll(timeout_s=0.1):
            node, _, rest = key.partition("|")
            if node != self.node:
                continue
            adapter_id, _, revision = rest.partition("|")
            if adapter_id in self.erased:
                continue  # an intent written before the controller heard: never loaded
            if value is None:
                self.desired.pop(ResidentKey(adapter_id, int(revision)), None)
            else:
                intent = pb.ResidencyIntent.FromString(value)
                self.desired[ResidentKey(adapter_id, int(revision))] = (
                    from_proto(intent.revision),
                    intent,
                )

    def _reconcile(self) -> None:
        # Runs after every poll: no sorting here, it would grow with the resident set.
        resident = self.engine.resident_by_key()
        for key in resident.keys() - self.desired.keys():
            if self.engine.evict(resident[key]):  # reported with the engine's evictions
                self._report_now.set()
        now = time.monotonic()
        with self._lock:
            due = [
                (key, ref, intent.pinned)
                for key, (ref, intent) in self.desired.items()
                if key not in resident
                and key not in self._loading
                and now - self._failed.get(key, -RETRY_FAILED_S) >= RETRY_FAILED_S
            ]
            self._loading.update(key for key, _, _ in due)
        for key, ref, pinned in due:
            self._loads.submit(self._load_once, key, ref, pinned)

    def _load_once(self, key: ResidentKey, ref: RevisionRef, pinned: bool) -> None:
        try:
            wanted = key in self.desired and not self._stop.is_set()
            if wanted and not self.engine.is_resident(ref):  # (done while this waited)
                self._load(ref, pinned)
        finally:
            with self._lock:
                self._loading.discard(key)
            self._report_now.set()

    def _load(self, ref: RevisionRef, pinned: bool) -> None:
        started = time.perf_counter()
        try:
            fetched = fetch_revision(self.catalog, ref, self.disk, self.reserve)
            copy_started = time.perf_counter()
            self.engine.load(fetched.ref, fetched.weights, pinned, verify=fetched.verify)
            fetched.keep(self.disk)  # before the check below, which drops it if erased
            if ref.adapter_id in self.erased:  # erased while it loaded: out again
                self.engine.evict(fetched.ref)
                self._forget_files(self.erased[ref.adapter_id])
                return
        except Exception as exc:  # whatever it was, this revision failed, the rest go on
            log.warning("loading %s failed: %s", ref.label, exc)
            with self._lock:
                self._failed[key_of(ref)] = time.monotonic()
            self._outcome(Outcome.FAILED, ref, 0, error=str(exc))
            self.metrics.loads.labels("failed").inc()
            return
        done = time.perf_counter()
        with self._lock:
            self._failed.pop(key_of(ref), None)
        self.metrics.load_seconds.observe(done - started)
        self.metrics.loads.labels("loaded_from_disk" if fetched.from_disk else "loaded").inc()
        self._outcome(
            Outcome.LOADED,
            ref,
            len(fetched.data),
            fetch_ms=fetched.fetch_s * 1000,
            load_ms=(fetched.parse_s + done - copy_started) * 1000,
        )
        log.info("loaded %s in %.1f ms", ref.label, (done - started) * 1000)

    def _outcome(self, kind: int, ref: RevisionRef, nbytes: int, **fields: object) -> None:
        revision = to_proto(ref, facts=False)
        outcome = pb.LoadOutcome(kind=kind, revision=revision, bytes=nbytes, **fields)  # type: ignore[arg-type]
        with self._lock:
            self._outcomes.append(outcome)

    def _report(self, stopping: bool = False) -> None:
        for gone in self.engine.take_evicted():  # for room in host memory, or undesired
            self._outcome(Outcome.EVICTED, gone, gone.weights_size)
            self.metrics.evictions.inc()
        resident = self.engine.resident()
        tiers = [pb.TierUsage(**dataclasses.asdict(t)) for t in self.engine.tiers()]
        if self.disk is not None:
            tiers.append(
                pb.TierUsage(
                    tier="disk",
                    budget_bytes=self.disk.budget_bytes,
                    used_bytes=self.disk.used_bytes,
                    adapters=len(self.disk),
                )
            )
        for tier in tiers:
            self.metrics.resident.labels(tier.tier).set(tier.adapters)
            self.metrics.resident_bytes.labels(tier.tier).set(tier.used_bytes)
            self.metrics.budget_bytes.labels(tier.tier).set(tier.budget_bytes)
        for usage in self.engine.rank_classes():
            counts = {"total": usage.slots, "filled": usage.filled, "leased": usage.leased}
            for state, count in counts.items():
                self.metrics.slots.labels(str(usage.rank), state).set(count)
        host = next(t for t in tiers if t.tier == "host")
        at = Timestamp()
        at.GetCurrentTime()
        with self._lock:
            outcomes, self._outcomes = self._outcomes, []
        report = pb.NodeReport(
            node=self.node,
            address=self.address,
            base_fingerprint=self.engine.base_fingerprint,
            budget_bytes=host.budget_bytes,  # what placement fills: every resident revision
            used_bytes=host.used_bytes,
            slots=self.engine.table.capacity,
            resident=[to_proto(r, facts=False) for r in resident],
            outcomes=outcomes,
            at=at,
            stopping=stopping,
            max_prompt_tokens=self.engine.max_prompt_tokens,
            tokenizer=self.engine.tokenizer_fingerprint,
            tiers=tiers,
            device=str(self.engine.model_device),
            dtype=dtype_name(self.engine.model_dtype),
        )
        self._producer.send(
            self.topics.status, key=self.node.encode(), value=report.SerializeToString()
        )
