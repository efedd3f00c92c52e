"""Collecting blobs that no event references: a command that lost a race after its blob
was stored (blobs go first, events last) leaves one behind.

The hazard is a command about to reference a blob the collector is deleting: content
addressing means a new upload of the same bytes finds the orphan already there and
writes nothing, so the orphan's age says nothing about whether a command is about to
point at it. Collection is therefore mark, wait, re-check, delete:

1. Candidates: blobs last written more than `grace_s` ago (a young blob is most likely
   one whose command has not appended yet: left alone), plus blobs a collector that
   stopped halfway left marked.
2. The log is read to its end; candidates it references are kept.
3. Each remaining orphan is marked (`BlobStore.mark`). From then on the registry
   refuses to reference it: after storing a blob and before appending the event that
   names it, a command checks for a mark (`Registry._store_blob`: UNAVAILABLE, "retry"),
   and stores the blob again if it is gone.
4. Wait `lease_s`: longer than a command may take from that check to its append (the
   caller's deadline, 30 s by default; the writer's transaction timeout). A command that
   checked before the mark has appended by then.
5. The log is read to its end again. A marked blob it now references (a command that
   checked just before the mark) is kept; the rest are deleted, and only then unmarked.

Why it is safe: a command that found no mark at time t references its blob by t + lease.
A collection whose mark came after t reads the log after t + lease, so it sees the
reference and keeps the blob. A collection whose mark came before t had already removed
the mark, so had already deleted the blob, before t: the command's blob check after t
finds it gone and stores it again. Only the bytes of a refused command are lost, and its
retry (same request id) stores them again once the mark is gone.

One collection at a time (a CronJob with `concurrencyPolicy: Forbid`): a second run
could delete, after its own re-check, a blob that a command stored again once the first
run had removed its mark.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from mint.domain.events import ChannelGateSet, Event, RevisionPublished, UpdateRequested
from mint.eventlog.port import EventLog, Recorded

from .port import BlobStore

DEFAULT_GRACE_S = 24 * 3600.0
DEFAULT_LEASE_S = 300.0
REFERENCING = frozenset(
    {"mint.v1.RevisionPublished", "mint.v1.ChannelGateSet", "mint.v1.UpdateRequested"}
)


def references(event: Event) -> Iterable[str]:
    """The blobs an event points to."""
    if isinstance(event, RevisionPublished):
        yield event.weights_sha256
    elif (isinstance(event, ChannelGateSet) and event.examples_sha256) or isinstance(
        event, UpdateRequested
    ):
        yield event.examples_sha256


@dataclass
class Collection:
    """What a run found and did; also its progress while it runs."""

    dry_run: bool
    phase: str = "listing"
    events_read: int = 0
    blobs_seen: int = 0
    young: int = 0  # within the grace period
    referenced: int = 0  # candidates the log points to
    orphans: list[str] = field(default_factory=list)  # marked (or, dry run, would be)
    saved: list[str] = field(default_factory=list)  # referenced by the time of the re-check
    deleted: list[str] = field(default_factory=list)
    bytes_freed: int = 0

    def summary(self) -> str:
        done = "would delete" if self.dry_run else "deleted"
        count = len(self.orphans) if self.dry_run else len(self.deleted)
        return (
            f"{self.blobs_seen:,} blobs, {self.events_read:,} events read: "
            f"{self.young:,} within the grace period, {self.referenced:,} referenced, "
            f"{len(self.saved):,} referenced while marked (kept); {done} {count:,} "
            f"unreferenced ({self.bytes_freed:,} bytes)"
        )


Progress = Callable[[Collection], None]


def collect(
    log: EventLog,
    blobs: BlobStore,
    grace_s: float = DEFAULT_GRACE_S,
    lease_s: float = DEFAULT_LEASE_S,
    dry_run: bool = False,
    progress: Progress = lambda _: None,
    wait: Callable[[float], None] = time.sleep,
) -> Collection:
    """One collection (see the module's docstring); `progress` is called as it goes."""
    run = Collection(dry_run)
    young_since = datetime.now(UTC) - timedelta(seconds=grace_s)
    sizes: dict[str, int] = {}
    for blob in blobs.stored():
        run.blobs_seen += 1
        if blob.modified > young_since:
            run.young += 1
        else:
            sizes[blob.sha256] = blob.size
        _every(run, run.blobs_seen, progress)
    leftover = set(blobs.marks())  # a run that stopped halfway: finish its work
    candidates = set(sizes) | leftover
    run.phase = "reading the log"
    referenced = _referenced(log, candidates, run, progress)
    run.referenced = len(referenced - leftover)
    run.orphans = sorted(candidates - referenced)
    if dry_run:
        run.bytes_freed = sum(sizes.get(s, 0) for s in run.orphans)
        run.phase = "done"
        progress(run)
        return run
    for sha256 in run.orphans:
        blobs.mark(sha256)
    for sha256 in leftover & referenced:  # referenced after all: let it be used again
        blobs.unmark(sha256)
    run.phase = f"waiting {lease_s:g} s for commands that checked before the marks"
    progress(run)
    wait(lease_s)
    run.phase = "reading the log again"
    again = _referenced(log, set(run.orphans), run, progress)
    for sha256 in run.orphans:
        if sha256 in again:
            run.saved.append(sha256)
        else:
            blobs.delete(sha256)  # deleted before unmarked: see the module's docstring
            run.deleted.append(sha256)
            run.bytes_freed += sizes.get(sha256, 0)
        blobs.unmark(sha256)
        _every(run, len(run.saved) + len(run.deleted), progress)
    run.phase = "done"
    progress(run)
    return run


def _referenced(log: EventLog, wanted: set[str], run: Collection, progress: Progress) -> set[str]:
    """Which of `wanted` the log references, read to its end as of now."""
    found: set[str] = set()
    recorded: Recorded
    for recorded in log.read_all():
        run.events_read += 1
        if recorded.envelope.event_type in REFERENCING:  # decode only those
            found.update(s for s in references(recorded.event) if s in wanted)
        _every(run, run.events_read, progress)
    return found


def _every(run: Collection, count: int, progress: Progress) -> None:
    if count % 1000 == 0:
        progress(run)
