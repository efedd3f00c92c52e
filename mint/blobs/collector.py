"""Collecting blobs that no event references: a command that lost a race after its blob
was stored (blobs go first, events last) leaves one behind.

Blobs are the adapters' own (sealed per adapter, mint/blobs/port.py), so a reference is
an (adapter id, sha256) pair: an event of an adapter's stream names a blob of that
adapter (RevisionPublished its weights, ChannelGateSet and UpdateRequested their
examples), and the stream's AdapterCreated says which adapter id that is. An erased
adapter's blobs are not the collector's business: erasure deletes them, and its sweep
finishes what a crash left; the collector neither marks nor deletes them.

The hazard is a command about to reference a blob the collector is deleting: content
addressing means a new upload of the same bytes to the same adapter finds the orphan
already there and writes nothing, so the orphan's age says nothing about whether a
command is about to point at it. Collection is therefore mark, wait, re-check, delete:

1. Candidates: blobs last written more than `grace_s` ago (a young blob is most likely
   one whose command has not appended yet: left alone), plus blobs a collector that
   stopped halfway left marked.
2. The log is read to its end; candidates it references are kept, and so are those of
   erased adapters (left to erasure).
3. Each remaining orphan is marked (`BlobStore.mark`). From then on the registry
   refuses to reference it: after storing a blob and before appending the event that
   names it, a command checks for a mark (`Registry._store_blob`: UNAVAILABLE, "retry"),
   and stores the blob again if it is gone.
4. Wait `lease_s`: longer than a command may take from that check to its append (the
   caller's deadline, 30 s by default; the writer's transaction timeout). A command that
   checked before the mark has appended by then.
5. The log is read to its end again. A marked blob it now references (a command that
   checked just before the mark) is kept, as is one whose adapter was erased meanwhile;
   the rest are deleted, and only then unmarked.

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

from mint.domain.events import (
    AdapterCreated,
    AdapterErased,
    ChannelGateSet,
    Event,
    RevisionPublished,
    UpdateRequested,
)
from mint.eventlog.port import EventLog, Recorded

from .port import BlobId, BlobStore

DEFAULT_GRACE_S = 24 * 3600.0
DEFAULT_LEASE_S = 300.0
REFERENCING = frozenset(
    {"mint.v1.RevisionPublished", "mint.v1.ChannelGateSet", "mint.v1.UpdateRequested"}
)
# Which adapter a stream is, and whether it was erased: decoded too.
IDENTIFYING = frozenset({"mint.v1.AdapterCreated", "mint.v1.AdapterErased"})


def references(event: Event) -> Iterable[str]:
    """The sha256s of the blobs an event points to (blobs of its stream's adapter)."""
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
    erased: int = 0  # candidates of erased adapters: erasure's business, left alone
    orphans: list[BlobId] = field(default_factory=list)  # marked (or, dry run, would be)
    saved: list[BlobId] = field(default_factory=list)  # referenced by the re-check's time
    deleted: list[BlobId] = field(default_factory=list)
    bytes_freed: int = 0

    def summary(self) -> str:
        done = "would delete" if self.dry_run else "deleted"
        count = len(self.orphans) if self.dry_run else len(self.deleted)
        return (
            f"{self.blobs_seen:,} blobs, {self.events_read:,} events read: "
            f"{self.young:,} within the grace period, {self.referenced:,} referenced, "
            f"{self.erased:,} of erased adapters, "
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
    sizes: dict[BlobId, int] = {}
    for stored in blobs.stored():
        run.blobs_seen += 1
        if stored.modified > young_since:
            run.young += 1
        else:
            sizes[stored.blob] = stored.size
        _every(run, run.blobs_seen, progress)
    leftover = set(blobs.marks())  # a run that stopped halfway: finish its work
    candidates = set(sizes) | leftover
    run.phase = "reading the log"
    referenced = _referenced(log, candidates, run, progress)
    run.referenced = len(referenced.kept - leftover)
    run.erased = len(referenced.erased_among(candidates))
    run.orphans = sorted(candidates - referenced.kept - referenced.erased_among(candidates))
    if dry_run:
        run.bytes_freed = sum(sizes.get(b, 0) for b in run.orphans)
        run.phase = "done"
        progress(run)
        return run
    for blob in run.orphans:
        blobs.mark(*blob)
    for blob in leftover - set(run.orphans):  # referenced or erased after all
        blobs.unmark(*blob)
    run.phase = f"waiting {lease_s:g} s for commands that checked before the marks"
    progress(run)
    wait(lease_s)
    run.phase = "reading the log again"
    again = _referenced(log, set(run.orphans), run, progress)
    kept = again.kept | again.erased_among(set(run.orphans))
    for blob in run.orphans:
        if blob in kept:
            run.saved.append(blob)
        else:
            blobs.delete(*blob)  # deleted before unmarked: see the module's docstring
            run.deleted.append(blob)
            run.bytes_freed += sizes.get(blob, 0)
        blobs.unmark(*blob)
        _every(run, len(run.saved) + len(run.deleted), progress)
    run.phase = "done"
    progress(run)
    return run


@dataclass
class _Read:
    """What one read of the log found about the blobs wanted."""

    kept: set[BlobId] = field(default_factory=set)  # referenced
    erased: set[str] = field(default_factory=set)  # adapter ids

    def erased_among(self, blobs: set[BlobId]) -> set[BlobId]:
        return {b for b in blobs if b.adapter_id in self.erased}


def _referenced(log: EventLog, wanted: set[BlobId], run: Collection, progress: Progress) -> _Read:
    """Which of `wanted` the log references, and which adapters it erased, read to its
    end as of now."""
    found = _Read()
    adapter_ids: dict[str, str] = {}  # stream -> adapter id
    wanted_digests = {b.sha256 for b in wanted}
    recorded: Recorded
    for recorded in log.read_all():
        run.events_read += 1
        kind, stream = recorded.envelope.event_type, recorded.envelope.stream_id
        if kind in IDENTIFYING:
            event = recorded.event
            if isinstance(event, AdapterCreated):
                adapter_ids[stream] = event.adapter_id
            elif isinstance(event, AdapterErased):
                found.erased.add(event.adapter_id)
        elif kind in REFERENCING:  # decode only those
            for sha256 in references(recorded.event):
                if sha256 not in wanted_digests:
                    continue
                adapter_id = adapter_ids.get(stream)
                if adapter_id is None:  # its creation unread (cannot be): keep every copy
                    found.kept.update(b for b in wanted if b.sha256 == sha256)
                else:
                    found.kept.add(BlobId(adapter_id, sha256))
        _every(run, run.events_read, progress)
    found.kept &= wanted
    return found


def _every(run: Collection, count: int, progress: Progress) -> None:
    if count % 1000 == 0:
        progress(run)
