"""Verification: every stream's hash chain, every referenced blob's sha256, and the
projection against the log: its revision files (what readers download) against the log's
hashes, and every other object (pointers, `current.json`, manifests, evaluations, catalog
entries) against what the projector's planner writes for the log (projection.py).

One pass over the log, holding no event once it is checked: per stream only its chain's
head and its adapter's creation (given the projection, also what the projector's planner
folds and 44 bytes per object it writes: projection.py). Each distinct blob is read and
hashed once per run, however many revisions of its adapter share it: its verdict (its
size, or what is wrong with it) is kept by adapter and sha256, for up to `blob_memo` blobs
(the least recently used go first; a blob whose verdict went is read again). Erasures are
reported, and the blobs and projection files they removed are not problems (erasures.py).

Beyond the chains: a record that is no event is named by its position and the walk goes
on (records.py); a stream whose first event is no creation was never created; an event
id seen twice is named with where it was first (event_ids.py), and an exact copy of an
earlier event is that, not a break of its stream's chain, which goes on from the original.

Blobs and projection files are read `reads` at a time (each read is a round trip or two
to S3, and at a million revisions one at a time takes most of an hour); their verdicts
are judged in log order, with at most `IN_FLIGHT_PER_READER` reads per reader waiting.
The projection's other objects are known only once the whole log is planned (a pointer's
last move may be its last event): they are read after the walk, on the same pool, each
once, then its folders listed for objects no event writes.
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from cachetools import LRUCache

from mint.blobs.port import BlobStore
from mint.domain.errors import DataLoss, Erased, NotFound
from mint.domain.events import AdapterCreated, AdapterErased, Event, RevisionPublished
from mint.eventlog.chain import ChainProblem, StreamChain
from mint.eventlog.port import Recorded
from mint.layout import ADAPTER_CONFIG, ADAPTER_WEIGHTS, revision_prefix

from .erasures import Erasure, ErasureLedger
from .event_ids import EventIds
from .projection import MISSING, Expected, Listed, difference
from .records import CREATIONS, LogRecord, Unreadable, never_created, problem_at

T = TypeVar("T")
# About 300 bytes a verdict: a million distinct blobs (the scale MinT is built for) in
# some 300 MB.
BLOB_MEMO = 1_000_000
READS = 8  # blob and file reads at a time (within the S3 client's 16 connections)
IN_FLIGHT_PER_READER = 4
PROGRESS_EVERY = 1000  # events (or projection objects) between two progress reports
ERASED = "its adapter's data key was destroyed"


class Objects(Protocol):
    """Read access to the projection (S3Objects in production)."""

    def get(self, key: str) -> bytes | None:
        """The object's bytes, or None if there is no such object."""


@dataclass(frozen=True)
class Progress:
    """How far a verification has come."""

    events: int
    streams: int
    blobs_checked: int  # blobs read and hashed
    projection_files_checked: int
    projection_objects_checked: int = 0  # pointers, manifests, catalog entries, ...


@dataclass(frozen=True)
class Report:
    events: int
    streams: int
    blobs_checked: int
    problems: list[ChainProblem]
    projection_files_checked: int = 0
    erasures: tuple[Erasure, ...] = ()  # who erased which adapter, when, where
    projection_objects_checked: int = 0

    @property
    def clean(self) -> bool:
        return not self.problems


def verify(
    records: Iterable[LogRecord],
    blobs: BlobStore | None = None,
    projection: Objects | None = None,
    progress: Callable[[Progress], None] | None = None,
    blob_memo: int = BLOB_MEMO,
    reads: int = READS,
) -> Report:
    """Check chains per stream (in log order); given a blob store, every blob a revision
    references; given the projection, every revision's weights and config there, then
    every other object the log writes there (and, if it can list its keys, any object no
    event writes). Problems name the stream, version and position (a record that is no
    event: its position; a projection object: its key). `progress` hears how far it has
    come every `PROGRESS_EVERY` events (or objects) and at the end."""
    with ThreadPoolExecutor(reads, thread_name_prefix="verify") as pool:
        walk = _Walk(blobs, projection, blob_memo, _Reads(pool, reads * IN_FLIGHT_PER_READER))
        try:
            for recorded in records:
                walk.check(recorded)
                if progress is not None and walk.events % PROGRESS_EVERY == 0:
                    progress(walk.progress())
            walk.check_objects(progress)
            walk.reads.finish()
        except BaseException:  # a read failed (S3 down), the log did, or ^C: stop reading
            pool.shutdown(wait=False, cancel_futures=True)
            raise
    if progress is not None:
        progress(walk.progress())
    return walk.report()


class _Reads:
    """Reads run on a pool; their verdicts are judged in the order they were asked for,
    the oldest as soon as it is in (or once too many wait)."""

    def __init__(self, pool: ThreadPoolExecutor, most: int) -> None:
        self.pool, self.most = pool, most
        self.waiting: deque[tuple[Future[Any], Callable[[Any], None]]] = deque()

    def ask(self, read: Future[Any], judge: Callable[[Any], None]) -> None:
        self.waiting.append((read, judge))
        while self.waiting and (len(self.waiting) > self.most or self.waiting[0][0].done()):
            self._judge_oldest()

    def finish(self) -> None:
        while self.waiting:
            self._judge_oldest()

    def _judge_oldest(self) -> None:
        read, judge = self.waiting.popleft()
        judge(read.result())  # a read that failed (S3 down) raises here, as it would inline


class _Walk:
    def __init__(
        self, blobs: BlobStore | None, projection: Objects | None, memo: int, reads: _Reads
    ) -> None:
        self.blobs, self.projection, self.reads = blobs, projection, reads
        # Given the projection: what the log writes there besides revision files.
        self.expected = Expected() if projection is not None else None
        self.chains: dict[str, StreamChain] = {}
        self.names: dict[str, AdapterCreated] = {}  # per adapter stream
        self.ledger = ErasureLedger()
        self.verdicts: LRUCache[str, int | str] = LRUCache(maxsize=memo)
        self.reading: dict[str, Future[int | str]] = {}  # verdicts asked for, not yet in
        self.ids = EventIds()
        self.problems: list[ChainProblem] = []
        self.events = self.blobs_read = self.files = self.objects = 0

    def check(self, r: LogRecord) -> None:
        if isinstance(r, Unreadable):
            self._found([r.problem()])
            return
        self.events += 1
        if self.expected is not None:  # every event the projector plans, copies included
            trouble = self.expected.note(r)
            if trouble:
                self._found([problem_at(r, trouble)])
        if not self._check_place(r):
            return
        stream = r.envelope.stream_id
        if self.blobs is None and self.projection is None:
            return
        try:
            event: Event = r.event
        except Exception as exc:  # an altered payload may not even decode
            if self.blobs is not None:
                self._found([problem_at(r, f"payload does not decode: {exc}")])
            return
        if isinstance(event, AdapterCreated):
            self.names[stream] = event
        if isinstance(event, AdapterErased):
            self.ledger.note(r, event)
        created = self.names.get(stream)
        if isinstance(event, RevisionPublished) and created is not None:
            if self.blobs is not None:
                self._check_blob(r, event, created.adapter_id, self.blobs)
            if self.projection is not None:
                self._check_files(r, event, created, self.projection)

    def _check_place(self, r: Recorded) -> bool:
        """Check the event's place in its stream's chain and in the log. False for an
        exact copy of an earlier event: checked there, its stream goes on from there."""
        e = r.envelope
        seen = self.ids.note(e.event_id, e.hash, r.position)
        if seen is not None and seen.same_event:
            copy = f"repeats the event at {seen.position} (the same event appended again)"
            self._found([problem_at(r, copy)])
            return False
        problems: list[ChainProblem] = []
        chain = self.chains.get(e.stream_id)
        if chain is None:
            chain = self.chains[e.stream_id] = StreamChain()
            if e.stream_version == 1 and e.event_type not in CREATIONS:
                problems.append(never_created(r))
        problems += chain.check(e, str(r.position), r.stored)
        if seen is not None:
            problems.append(
                problem_at(r, f"reuses the event id {e.event_id} of the event at {seen.position}")
            )
        self._found(problems)
        return True

    def _check_blob(
        self, r: Recorded, event: RevisionPublished, adapter_id: str, blobs: BlobStore
    ) -> None:
        memo = f"{adapter_id}/{event.weights_sha256}"
        read = self.reading.get(memo)
        if read is None:
            verdict = self.verdicts.get(memo)
            if verdict is None:
                self.blobs_read += 1
                read = self.reading[memo] = self.reads.pool.submit(
                    _read, blobs, adapter_id, event.weights_sha256
                )
            else:
                read = _done(verdict)

        def judge(verdict: int | str) -> None:
            self.verdicts[memo] = verdict
            self.reading.pop(memo, None)
            self._judge_blob(r, event, verdict)

        self.reads.ask(read, judge)

    def _judge_blob(self, r: Recorded, event: RevisionPublished, verdict: int | str) -> None:
        if isinstance(verdict, str) and verdict.endswith(ERASED):
            self.ledger.hold(problem_at(r, verdict))
        elif isinstance(verdict, str):
            self._problem(r, verdict)
        elif verdict != event.weights_size:
            self._problem(
                r,
                f"blob {event.weights_sha256} has {verdict} bytes, "
                f"the event says {event.weights_size}",
            )

    def _check_files(
        self, r: Recorded, event: RevisionPublished, created: AdapterCreated, projection: Objects
    ) -> None:
        prefix = revision_prefix(created.tenant, created.name, event.revision)
        config_sha256 = hashlib.sha256(event.config_json.encode()).hexdigest()
        for key, sha256 in (
            (prefix + ADAPTER_WEIGHTS, event.weights_sha256),
            (prefix + ADAPTER_CONFIG, config_sha256),
        ):
            self.files += 1
            if self.ledger.erased(r.envelope.stream_id):
                continue  # cannot be: no revision follows an erasure
            read = self.reads.pool.submit(_check_file, projection, key, sha256)
            self.reads.ask(read, self._file_judge(r))

    def _file_judge(self, r: Recorded) -> Callable[[str | None], None]:
        def judge(problem: str | None) -> None:
            if problem and problem.startswith(MISSING):  # unless erased later in the log
                self.ledger.hold(problem_at(r, problem))
            elif problem:
                self._problem(r, problem)

        return judge

    def check_objects(self, progress: Callable[[Progress], None] | None) -> None:
        """After the walk: read each object the log writes to the projection (but revision
        files) once and compare; then list the projection for objects no event writes."""
        if self.expected is None or self.projection is None:
            return
        projection = self.projection
        for key, expectation in self.expected.items():
            self.objects += 1
            read = self.reads.pool.submit(_check_object, projection, key, expectation)
            self.reads.ask(read, self._object_judge)
            if progress is not None and self.objects % PROGRESS_EVERY == 0:
                progress(self.progress())
        if isinstance(projection, Listed):
            self._found(list(self.expected.unaccounted(projection)))

    def _object_judge(self, problem: ChainProblem | None) -> None:
        if problem is not None:
            self.problems.append(problem)

    def _found(self, problems: list[ChainProblem]) -> None:
        """Problems found now, listed after those of the reads asked for before them."""
        if problems:
            self.reads.ask(_done(problems), self.problems.extend)

    def _problem(self, r: Recorded, text: str) -> None:
        self.problems.append(problem_at(r, text))

    def progress(self) -> Progress:
        return Progress(self.events, len(self.chains), self.blobs_read, self.files, self.objects)

    def report(self) -> Report:
        problems = self.problems + self.ledger.unexplained()
        problems.sort(key=lambda p: p.stream_id)  # each in log order; records of none first
        return Report(
            self.events,
            len(self.chains),
            self.blobs_read,
            problems,
            self.files,
            tuple(self.ledger.erasures),
            self.objects,
        )


def _done(value: T) -> Future[T]:
    future: Future[T] = Future()
    future.set_result(value)
    return future


def _read(blobs: BlobStore, adapter_id: str, sha256: str) -> int | str:
    """The blob's size, or what is wrong with it."""
    try:
        return len(blobs.get(adapter_id, sha256))
    except Erased:
        return f"blob {sha256} opens no more: {ERASED}"
    except NotFound:
        return f"blob {sha256} is missing"
    except DataLoss:
        return f"blob {sha256} is corrupt: its bytes do not match the recorded sha256"


def _check_object(projection: Objects, key: str, expectation: bytes) -> ChainProblem | None:
    return difference(key, expectation, projection.get(key))


def _check_file(projection: Objects, key: str, sha256: str) -> str | None:
    data = projection.get(key)
    if data is None:
        return f"{MISSING} {key}"
    actual = hashlib.sha256(data).hexdigest()
    if actual != sha256:
        return (
            f"projection's {key} differs from the log (sha256 {actual}, the event says "
            f"{sha256}); a rebuild into the projection repairs it"
        )
    return None
