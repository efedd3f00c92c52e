"""Verification: every stream's hash chain, and every referenced blob's sha256."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from mint.blobs.port import BlobStore
from mint.domain.errors import DataLoss, NotFound
from mint.domain.events import RevisionPublished
from mint.eventlog.chain import ChainProblem, verify_stream
from mint.eventlog.port import Recorded


@dataclass(frozen=True)
class Report:
    events: int
    streams: int
    blobs_checked: int
    problems: list[ChainProblem]

    @property
    def clean(self) -> bool:
        return not self.problems


def verify(records: Iterable[Recorded], blobs: BlobStore | None = None) -> Report:
    """Check chains per stream (in log order) and, given a blob store, every blob a
    revision references. Problems name the stream, version and position."""
    streams: dict[str, list[Recorded]] = defaultdict(list)
    count = 0
    for recorded in records:
        streams[recorded.envelope.stream_id].append(recorded)
        count += 1
    problems: list[ChainProblem] = []
    checked: set[str] = set()
    for events in streams.values():
        problems += verify_stream((r.envelope, str(r.position)) for r in events)
        if blobs is not None:
            problems += _check_blobs(events, blobs, checked)
    problems.sort(key=lambda p: p.stream_id)  # stable: each stream keeps its log order
    return Report(count, len(streams), len(checked), problems)


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
