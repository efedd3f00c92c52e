"""`mint-audit gc`: collect blobs no event references (mint/blobs/collector.py), showing
progress on stderr and writing the run's figures as Prometheus metrics."""

from __future__ import annotations

import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from prometheus_client import CollectorRegistry, Gauge, write_to_textfile

from mint.blobs.collector import Collection, collect
from mint.blobs.port import BlobStore
from mint.eventlog.port import EventLog

EVERY_S = 10.0  # between two progress lines within a phase


class Shown:
    """A progress line on `out` at each new phase and every `EVERY_S` within one."""

    def __init__(self, out: TextIO) -> None:
        self.out, self.phase, self.written = out, "", 0.0

    def __call__(self, run: Collection) -> None:
        if run.phase != self.phase or time.monotonic() - self.written >= EVERY_S:
            self.phase, self.written = run.phase, time.monotonic()
            stamp = datetime.now(UTC).isoformat(timespec="seconds")
            print(
                f"{stamp} gc: {run.phase}: {run.blobs_seen:,} blobs, {run.events_read:,} "
                f"events read, {len(run.orphans):,} unreferenced, {len(run.deleted):,} deleted",
                file=self.out,
                flush=True,
            )


def run_gc(
    log: EventLog,
    blobs: BlobStore,
    grace_s: float,
    lease_s: float,
    dry_run: bool,
    metrics_file: Path | None = None,
    out: TextIO | None = None,
) -> Collection:
    started = time.monotonic()
    run = collect(log, blobs, grace_s, lease_s, dry_run, Shown(out or sys.stderr))
    if metrics_file is not None:
        write_metrics(run, time.monotonic() - started, metrics_file)
    return run


def write_metrics(run: Collection, seconds: float, path: Path) -> None:
    """The run's figures in Prometheus' text format (node-exporter's textfile collector,
    or a push from the job), replaced atomically."""
    registry = CollectorRegistry()
    figures = {
        "blobs_seen": ("Blobs stored when the run listed them", run.blobs_seen),
        "blobs_young": ("Blobs within the grace period (not considered)", run.young),
        "blobs_erased": ("Blobs of erased adapters (left to the erasure)", run.erased),
        "blobs_unreferenced": ("Blobs no event referenced (marked)", len(run.orphans)),
        "blobs_saved": ("Marked blobs referenced by the re-check (kept)", len(run.saved)),
        "blobs_deleted": ("Blobs deleted", len(run.deleted)),
        "bytes_freed": ("Bytes deleted (or, dry run, that would be)", run.bytes_freed),
        "events_read": ("Events read (twice the log, unless a dry run)", run.events_read),
        "duration_seconds": ("How long the run took", seconds),
        "dry_run": ("1 if the run deleted nothing by request", int(run.dry_run)),
        "last_run_timestamp_seconds": ("When the run ended (Unix time)", time.time()),
    }
    for name, (doc, value) in figures.items():
        Gauge(f"mint_gc_{name}", doc, registry=registry).set(value)
    write_to_textfile(str(path), registry)
