"""Verification: every stream's hash chain, every referenced blob's sha256, and the
revision files of the projection (what readers download) against the log's hashes."""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol

from mint.blobs.port import BlobStore
from mint.domain.errors import DataLoss, NotFound
from mint.domain.events import AdapterCreated, Event, RevisionPublished
from mint.eventlog.chain import ChainProblem, verify_stream
from mint.eventlog.port import Recorded
from mint.layout import ADAPTER_CONFIG, ADAPTER_WEIGHTS, revision_prefix


class Objects(Protocol):
    """Read access to the projection (S3Objects in production)."""

    def get(self, key: str) -> bytes | None:
        """The object's bytes, or None if there is no such object."""


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
    records: Iterable[Recorded], blobs: BlobStore | None = None, projection: Objects | None = None
) -> Report:
    """Check chains per stream (in log order); given a blob store, every blob a revision
    references; given the projection, every revision's weights and config there. Problems
    name the stream, version and position."""
    streams: dict[str, list[Recorded]] = defaultdict(list)
    count = 0
    for recorded in records:
        streams[recorded.envelope.stream_id].append(recorded)
        count += 1
    problems: list[ChainProblem] = []
    checked: set[str] = set()
    files = 0
    for events in streams.values():
        problems += verify_stream((r.envelope, str(r.position)) for r in events)
        if blobs is not None:
            problems += _check_blobs(events, blobs, checked)
        if projection is not None:
            for r, key, sha256 in _projected_files(events):
                files += 1
                if problem := _check_file(projection, key, sha256):
                    problems.append(_problem(r, problem))
    problems.sort(key=lambda p: p.stream_id)  # stable: each stream keeps its log order
    return Report(count, len(streams), len(checked), problems, files)


def _projected_files(events: list[Recorded]) -> Iterator[tuple[Recorded, str, str]]:
    """(event, key, sha256) of each revision file the projection must hold."""
    created: AdapterCreated | None = None
    for r, event in _decoded(events):
        if isinstance(event, AdapterCreated):
            created = event
        if isinstance(event, RevisionPublished) and created is not None:
            prefix = revision_prefix(created.tenant, created.name, event.revision)
            yield r, prefix + ADAPTER_WEIGHTS, event.weights_sha256
            config = event.config_json.encode()
            yield r, prefix + ADAPTER_CONFIG, hashlib.sha256(config).hexdigest()


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


def _decoded(events: list[Recorded]) -> Iterator[tuple[Recorded, Event]]:
    """Events that decode (one that does not is reported by the chain check)."""
    for r in events:
        try:
            yield r, r.event
        except Exception:  # an altered payload may not even decode
            continue


def _check_blobs(events: list[Recorded], blobs: BlobStore, checked: set[str]) -> list[ChainProblem]:
    problems = []
    for r in events:
        try:
            event = r.event
        except Exception as exc:  # an altered payload may not even decode
            problems.append(_problem(r, f"payload does not decode: {exc}"))
            continue
        if not isinstance(event, RevisionPublished):
            continue
        checked.add(event.weights_sha256)
        try:
            data = blobs.get(event.weights_sha256)
        except NotFound:
            problems.append(_problem(r, f"blob {event.weights_sha256} is missing"))
            continue
        except DataLoss:
            problems.append(
                _problem(
                    r,
                    f"blob {event.weights_sha256} is corrupt: its bytes "
                    "do not match the recorded sha256",
                )
            )
            continue
        if len(data) != event.weights_size:
            problems.append(
                _problem(
                    r,
                    f"blob {event.weights_sha256} has {len(data)} bytes, "
                    f"the event says {event.weights_size}",
                )
            )
    return problems


def _problem(r: Recorded, text: str) -> ChainProblem:
    return ChainProblem(r.envelope.stream_id, r.envelope.stream_version, str(r.position), text)
