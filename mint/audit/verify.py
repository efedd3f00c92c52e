"""Verification: every stream's hash chain, every referenced blob's sha256, and the
revision files of the projection (what readers download) against the log's hashes.

One pass over the log, holding no event once it is checked: per stream only its chain's
head (and, given the projection, its adapter's name). Each distinct blob is read and
hashed once per run, however many revisions share it: its verdict (its size, or what is
wrong with it) is kept by sha256, for up to `blob_memo` blobs (the least recently used
go first; a blob whose verdict went is read again).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from cachetools import LRUCache

from mint.blobs.port import BlobStore
from mint.domain.errors import DataLoss, NotFound
from mint.domain.events import AdapterCreated, Event, RevisionPublished
from mint.eventlog.chain import ChainProblem, StreamChain
from mint.eventlog.port import Recorded
from mint.layout import ADAPTER_CONFIG, ADAPTER_WEIGHTS, revision_prefix

# About 300 bytes a verdict: a million distinct blobs (the scale MinT is built for) in
# some 300 MB.
BLOB_MEMO = 1_000_000
PROGRESS_EVERY = 1000  # events between two progress reports


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


@dataclass(frozen=True)
class Report:
    events: int
    streams: int
    blobs_checked: int
    problems: list[ChainProblem]
    projection_files_checked: int = 0

    @property
    def clean(self) -> bool:
        return not self.problems


def verify(
    records: Iterable[Recorded],
    blobs: BlobStore | None = None,
    projection: Objects | None = None,
    progress: Callable[[Progress], None] | None = None,
    blob_memo: int = BLOB_MEMO,
) -> Report:
    """Check chains per stream (in log order); given a blob store, every blob a revision
    references; given the projection, every revision's weights and config there. Problems
    name the stream, version and position. `progress` hears how far it has come every
    `PROGRESS_EVERY` events and at the end."""
    walk = _Walk(blobs, projection, blob_memo)
    for recorded in records:
        walk.check(recorded)
        if progress is not None and walk.events % PROGRESS_EVERY == 0:
            progress(walk.progress())
    if progress is not None:
        progress(walk.progress())
    return walk.report()


class _Walk:
    def __init__(self, blobs: BlobStore | None, projection: Objects | None, memo: int) -> None:
        self.blobs, self.projection = blobs, projection
        self.chains: dict[str, StreamChain] = {}
        self.names: dict[str, AdapterCreated] = {}  # per adapter stream, given a projection
        self.verdicts: LRUCache[str, int | str] = LRUCache(maxsize=memo)
        self.problems: list[ChainProblem] = []
        self.events = self.blobs_read = self.files = 0

    def check(self, r: Recorded) -> None:
        self.events += 1
        stream = r.envelope.stream_id
        chain = self.chains.get(stream) or self.chains.setdefault(stream, StreamChain())
        self.problems += chain.check(r.envelope, str(r.position), r.stored)
        if self.blobs is None and self.projection is None:
            return
        try:
            event: Event = r.event
        except Exception as exc:  # an altered payload may not even decode
            if self.blobs is not None:
                self._problem(r, f"payload does not decode: {exc}")
            return
        if isinstance(event, AdapterCreated) and self.projection is not None:
            self.names[stream] = event
        if isinstance(event, RevisionPublished):
            if self.blobs is not None:
                self._check_blob(r, event, self.blobs)
            created = self.names.get(stream)
            if self.projection is not None and created is not None:
                self._check_files(r, event, created, self.projection)

    def _check_blob(self, r: Recorded, event: RevisionPublished, blobs: BlobStore) -> None:
        verdict = self.verdicts.get(event.weights_sha256)
        if verdict is None:
            verdict = self.verdicts[event.weights_sha256] = self._read(blobs, event.weights_sha256)
        if isinstance(verdict, str):
            self._problem(r, verdict)
        elif verdict != event.weights_size:
            self._problem(
                r,
                f"blob {event.weights_sha256} has {verdict} bytes, "
                f"the event says {event.weights_size}",
            )

    def _read(self, blobs: BlobStore, sha256: str) -> int | str:
        """The blob's size, or what is wrong with it."""
        self.blobs_read += 1
        try:
            return len(blobs.get(sha256))
        except NotFound:
            return f"blob {sha256} is missing"
        except DataLoss:
            return f"blob {sha256} is corrupt: its bytes do not match the recorded sha256"

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
            if problem := _check_file(projection, key, sha256):
                self._problem(r, problem)

    def _problem(self, r: Recorded, text: str) -> None:
        self.problems.append(
            ChainProblem(r.envelope.stream_id, r.envelope.stream_version, str(r.position), text)
        )

    def progress(self) -> Progress:
        return Progress(self.events, len(self.chains), self.blobs_read, self.files)

    def report(self) -> Report:
        problems = sorted(self.problems, key=lambda p: p.stream_id)  # each in log order
        return Report(self.events, len(self.chains), self.blobs_read, problems, self.files)


def _check_file(projection: Objects, key: str, sha256: str) -> str | None:
    data = projection.get(key)
    if data is None:
        return f"projection has no {key}"
    actual = hashlib.sha256(data).hexdigest()
    if actual != sha256:
        return (
            f"projection's {key} differs from the log (sha256 {actual}, the event says "
            f"{sha256}); a rebuild into the projection repairs it"
        )
    return None
