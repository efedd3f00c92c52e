"""Gathers concurrent generation requests for a short window and runs them as one batch.

Requests with different adapters (or none), temperatures, top-p and seeds share a batch
(each samples on its own: sampling.py); requests that differ in max_new_tokens or in
stopping at EOS run in separate batches, one after another.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field

from .engine import GenerationJob, ServingEngine
from .requests import Sampling

log = logging.getLogger(__name__)
BatchObserver = Callable[[int], None]


@dataclass
class _Pending:
    job: GenerationJob
    sampling: Sampling
    result: Future[tuple[list[int], int]] = field(default_factory=Future)


class Batcher:
    def __init__(
        self,
        engine: ServingEngine,
        window_s: float = 0.005,
        max_batch: int = 32,
        on_batch: BatchObserver | None = None,
    ) -> None:
        self.engine, self.window_s, self.max_batch = engine, window_s, max_batch
        self.on_batch = on_batch
        self._queue: queue.Queue[_Pending | None] = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name="batcher", daemon=True)
        self._thread.start()

    def submit(self, job: GenerationJob, sampling: Sampling) -> Future[tuple[list[int], int]]:
        """A future of (new tokens, size of the batch it ran in)."""
        pending = _Pending(job, sampling)
        self._queue.put(pending)
        return pending.result

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=30)

    def _loop(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            deadline = time.monotonic() + self.window_s
            while len(batch) < self.max_batch:
                try:
                    item = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if item is None:
                    self._queue.put(None)  # stop after this batch
                    break
                batch.append(item)
            for group in _by_length(batch):
                self._run(group)

    def _run(self, group: list[_Pending]) -> None:
        if self.on_batch is not None:
            self.on_batch(len(group))
        try:
            outputs = self.engine.generate([p.job for p in group], [p.sampling for p in group])
        except Exception as exc:  # every waiting request learns why
            log.exception("batch of %d failed", len(group))
            for p in group:
                p.result.set_exception(exc)
            return
        for p, tokens in zip(group, outputs, strict=True):
            p.result.set_result((tokens, len(group)))


def _by_length(batch: list[_Pending]) -> list[list[_Pending]]:
    groups: dict[tuple[int, bool], list[_Pending]] = {}
    for p in batch:
        groups.setdefault((p.sampling.max_new_tokens, p.sampling.stop_at_eos), []).append(p)
    return list(groups.values())
