"""How `verify` shows how far it has come: a live line on a terminal (rich), else a plain
line now and then and one at the end (a job's log, a pipe)."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TextIO

from rich.console import Console
from rich.progress import Progress as Bar
from rich.progress import SpinnerColumn, TextColumn, TimeElapsedColumn

from .verify import Progress

EVERY_S = 10.0  # between two plain lines


def describe(progress: Progress, elapsed_s: float) -> str:
    rate = progress.events / elapsed_s if elapsed_s > 0 else 0.0
    files, blobs = progress.projection_files_checked, progress.blobs_checked
    objects = progress.projection_objects_checked
    return (
        f"{progress.events:,} events read ({rate:,.0f}/s), {progress.streams:,} streams"
        + (f", {blobs:,} blobs checked" if blobs else "")
        + (f", {files:,} projection files" if files else "")
        + (f", {objects:,} other projection objects" if objects else "")
    )


@contextmanager
def shown(
    out: TextIO | None = None,
    terminal: bool | None = None,
    doing: str = "verifying",
    done: str = "verified",
) -> Iterator[Callable[[Progress], None]]:
    """A callback for `verify(progress=...)` showing it on `out` (stderr): a live line if
    `out` is a terminal (or `terminal`), else a plain line every `EVERY_S` and at the end.
    `doing` and `done` name the work while and once it is done."""
    out = out or sys.stderr
    if out.isatty() if terminal is None else terminal:
        with _on_terminal(Console(file=out, force_terminal=True), doing) as show:
            yield show
    else:
        with _in_lines(out, doing, done) as show:
            yield show


@contextmanager
def _on_terminal(console: Console, doing: str) -> Iterator[Callable[[Progress], None]]:
    started = time.monotonic()
    columns = (SpinnerColumn(), TextColumn(doing + ": {task.description}"), TimeElapsedColumn())
    with Bar(*columns, console=console) as bar:
        task = bar.add_task("starting", total=None)
        yield lambda p: bar.update(task, description=describe(p, time.monotonic() - started))


@contextmanager
def _in_lines(out: TextIO, doing: str, done: str) -> Iterator[Callable[[Progress], None]]:
    started = written = time.monotonic()
    last: list[Progress] = []

    def line(text: str) -> None:
        print(f"{datetime.now(UTC).isoformat(timespec='seconds')} {text}", file=out, flush=True)

    def show(progress: Progress) -> None:
        nonlocal written
        last[:] = [progress]
        if time.monotonic() - written >= EVERY_S:
            written = time.monotonic()
            line(f"{doing}: {describe(progress, written - started)}")

    yield show
    if last:
        line(f"{done}: {describe(last[0], time.monotonic() - started)}")
