"""Clients sending registry commands through a fault, every attempt recorded.

Each client sends commands one after another, each with its own request id and a short
deadline. A command that fails with a retryable status is sent again with the same
request id until it succeeds; any other failure, or a deadline the server let pass, is
recorded as a broken promise for the test to report.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field

import grpc

from mint.backends.kafka import KafkaConnection
from mint.backends.kafka_log import KafkaEventLog, partition_for
from mint.client import RegistryClient
from mint.eventlog.chain import verify_stream
from mint.v1 import registry_pb2 as pb

DEADLINE_S = 10.0  # each attempt's deadline: short, to see the server answer within it
GIVE_UP_S = 90.0  # a command not through by then is reported as lost
RETRYABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED}


@dataclass(frozen=True)
class Ack:
    ref: str
    request_id: str
    first: int
    last: int
    started: float  # first attempt, monotonic
    acked: float


@dataclass(frozen=True)
class Failure:
    ref: str
    request_id: str
    publish: bool
    code: str
    message: str
    took_s: float
    at: float = 0.0  # when it was answered, monotonic


@dataclass
class Outcomes:
    acks: list[Ack] = field(default_factory=list)
    retried: list[Failure] = field(default_factory=list)  # retryable, answered in time
    broken: list[Failure] = field(default_factory=list)  # anything else
    lost: list[str] = field(default_factory=list)  # never got through

    def resumed_after(self, moment: float, partitions: int) -> dict[int, float]:
        """Partition -> seconds from `moment` until its first command acknowledged after."""
        first: dict[int, float] = {}
        for ack in self.acks:
            if ack.acked > moment:
                p = partition_for(ack.ref, partitions)
                first[p] = min(first.get(p, ack.acked), ack.acked)
        return {p: t - moment for p, t in sorted(first.items())}

    def answers_to_slowest(self, since: float) -> dict[str, int]:
        """What the command that waited longest after `since` was answered meanwhile."""
        slowest = max(
            (a for a in self.acks if a.acked > since), key=lambda a: a.acked - max(a.started, since)
        )
        return dict(
            Counter(
                f"{f.code}: {f.message}" for f in self.retried if f.request_id == slowest.request_id
            )
        )

    def longest_wait_s(self, since: float) -> float:
        """The longest a command waited to be acknowledged, counted from `since` for one
        already waiting then."""
        waits = [a.acked - max(a.started, since) for a in self.acks if a.acked > since]
        return max(waits, default=0.0)


class CommandLoad:
    """`clients` threads of commands on `refs`; a publish every `publish_every`."""

    def __init__(
        self,
        target: str,
        token: str,
        refs: list[str],
        upload: tuple[bytes, bytes] | None = None,
        clients: int = 4,
        publish_every: int = 5,
    ) -> None:
        self.client = RegistryClient(target, token, timeout_s=DEADLINE_S, retry_for_s=0)
        self.refs, self.upload = refs, upload
        self.publish_every = publish_every
        self.outcomes = Outcomes()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(seed,), daemon=True) for seed in range(clients)
        ]

    def __enter__(self) -> CommandLoad:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def acked(self) -> int:
        with self._lock:
            return len(self.outcomes.acks)

    def wait_for_acks(self, count: int, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while self.acked() < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {self.acked()} of {count} commands acknowledged")
            time.sleep(0.05)

    def wait_until_steady(self, partitions: int, window_s: float = 3.0) -> None:
        """Until the last `window_s` saw commands acknowledged on every partition and none
        refused but by a replica that does not own its partition: the replicas have
        settled who writes what, so a fault meets a steady cluster and the time to
        recover is the fault's alone."""
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            since = time.monotonic() - window_s
            with self._lock:
                acked = {
                    partition_for(a.ref, partitions) for a in self.outcomes.acks if a.acked > since
                }
                refused = [  # a replica sending the client on to the owner is routing
                    f
                    for f in self.outcomes.retried
                    if f.at > since and "does not own" not in f.message
                ]
            if len(acked) == partitions and not refused:
                return
            time.sleep(0.2)
        seen = sorted({f.message for f in refused})[:5]
        raise TimeoutError(
            f"the registry replicas never settled: acknowledged on partitions "
            f"{sorted(acked)} of {partitions}; refused with {seen}"
        )

    def stop(self) -> Outcomes:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=GIVE_UP_S + 2 * DEADLINE_S)
        self.client.close()
        return self.outcomes

    def _run(self, seed: int) -> None:
        rng = random.Random(seed)
        sent = 0
        while not self._stop.is_set():
            sent += 1
            ref = rng.choice(self.refs)
            publish = self.upload is not None and sent % self.publish_every == 0
            self._until_acked(ref, uuid.uuid4().hex, publish)

    def _until_acked(self, ref: str, request_id: str, publish: bool) -> None:
        started = time.monotonic()
        delay = 0.05
        answers: Counter[str] = Counter()
        while time.monotonic() - started < GIVE_UP_S:
            attempt = time.monotonic()
            try:
                result = self._send(ref, request_id, publish)
            except grpc.RpcError as exc:
                took_s = time.monotonic() - attempt
                failure = Failure(
                    ref,
                    request_id,
                    publish,
                    exc.code().name,
                    exc.details() or "",
                    took_s,
                    time.monotonic(),
                )
                in_time = failure.took_s < DEADLINE_S
                answers[f"{failure.code}: {failure.message}"] += 1
                with self._lock:
                    if exc.code() in RETRYABLE and in_time:
                        self.outcomes.retried.append(failure)
                    else:
                        self.outcomes.broken.append(failure)
                if exc.code() not in RETRYABLE | {grpc.StatusCode.DEADLINE_EXCEEDED}:
                    return  # not to be retried: reported as broken
                time.sleep(delay * random.uniform(0.5, 1.5))  # as mint/client/retry.py does;
                # the client has moved this adapter on to the next replica meanwhile
                delay = min(delay * 2, 1.0)
                continue
            with self._lock:
                self.outcomes.acks.append(
                    Ack(
                        ref,
                        request_id,
                        result.first_version,
                        result.last_version,
                        started,
                        time.monotonic(),
                    )
                )
            return
        with self._lock:
            self.outcomes.lost.append(f"{ref} {request_id}, answered: {dict(answers)}")

    def _send(self, ref: str, request_id: str, publish: bool) -> pb.CommandResult:
        if publish and self.upload is not None:
            return self.client.publish_revision(ref, self.upload, request_id=request_id)
        return self.client.set_gate(ref, "stable", "suite", request_id=request_id)


def check_log(kafka: KafkaConnection, topic: str, partitions: int, acks: list[Ack]) -> list[str]:
    """What the log alone says went wrong: gaps, broken chains, acknowledged commands
    missing or applied twice."""
    reader = KafkaEventLog(kafka, topic, partitions=partitions, owned=())
    streams: dict[str, list] = defaultdict(list)
    for recorded in reader.read_all():
        streams[recorded.envelope.stream_id].append(recorded)
    reader.close()
    problems = []
    for stream_id, events in streams.items():
        versions = [r.envelope.stream_version for r in events]
        if versions != list(range(1, len(versions) + 1)):
            problems.append(f"{stream_id}: versions {versions}")
        problems += [str(p) for p in verify_stream((r.envelope, str(r.position)) for r in events)]
    for ack in acks:
        found = [
            r.envelope.stream_version
            for r in streams[ack.ref]
            if r.envelope.request_id == ack.request_id
        ]
        if found != list(range(ack.first, ack.last + 1)):
            problems.append(f"{ack.ref} {ack.request_id}: acked {ack.first}-{ack.last}, {found}")
    return problems
