"""Continuous (iteration-level) batching: requests join and leave the running batch
between steps, each with its own KV cache rows, adapter slot, sampling and stop condition.

One step:
  1. requests that were cancelled or whose deadline passed leave (their leases released);
  2. if no cohort is prefilling, waiting requests (as many as the batch has room for)
     form one, their prompts left-padded to the longest. Each takes its slot lease now;
     one for which no slot can be had (all held by running requests) waits on, and
     those behind it that can run go ahead;
  3. one decode pass over the running batch: a token for every request in it, handed to
     its callback at once (streaming); a request that is complete leaves;
  4. one chunk of the cohort's prompts, at most `step_tokens` less the decodes' tokens,
     so a long prompt delays the running requests by at most one step's budget. After
     its last chunk each member has its first token and joins the running batch.

Waiting requests hold their revisions (they stay on the node) but no slot, so a long
queue of distinct adapters cannot take every slot from the requests that could run. The
queue is bounded: a full queue refuses a request at once with RESOURCE_EXHAUSTED, before
it holds anything (and nothing is built or copied for it).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from mint.domain.errors import ResourceExhausted, Unavailable

from .decode_graphs import DecodeGraphs
from .engine import ServingEngine
from .generation import Generation, OnToken, Output
from .kv_batch import KvBatch
from .requests import RevisionRef, Sampling
from .static_kv import StaticKvBatch

log = logging.getLogger(__name__)
__all__ = ["Generation", "Output", "Scheduler"]
RETRY_S = 0.01  # an idle scheduler whose waiting requests found no slot tries again


@dataclass
class _Cohort:
    """Requests prefilling together: their prompts [rows, width], left-padded."""

    members: list[Generation]
    batch: KvBatch
    ids: torch.Tensor
    mask: torch.Tensor
    fed: int = 0  # columns already run


class Scheduler:
    def __init__(
        self,
        engine: ServingEngine,
        max_batch: int = 32,
        max_queue: int = 256,
        step_tokens: int = 512,
        window_s: float = 0.0,
        on_step: Callable[[int], None] | None = None,
        graphs: DecodeGraphs | None = None,
    ) -> None:
        """`window_s`: how long an idle scheduler waits for more requests to start with.
        `on_step` hears how many requests each step runs. With `graphs`, decode passes are
        replayed from CUDA graphs (without them again for good if capturing fails)."""
        if step_tokens < max_batch:
            raise ValueError(
                f"step_tokens ({step_tokens}) must be at least max_batch ({max_batch}): "
                "every running request decodes a token in each step"
            )
        self.engine, self.max_batch, self.max_queue = engine, max_batch, max_queue
        self.step_tokens, self.window_s, self.on_step = step_tokens, window_s, on_step
        self.graphs = graphs
        self._lock = threading.Condition()
        self._waiting: deque[Generation] = deque()
        self._places = 0  # queue places taken: waiting, or taking a hold to wait
        self._blocked = False  # the last cohort found no slot for any waiting request
        self._closed = False
        self._running: list[Generation] = []
        self._batch = self._new_running()
        self._cohort: _Cohort | None = None
        self._unread: torch.Tensor | None = None  # the output of a pass not yet read back
        self._thread: threading.Thread | None = None

    # callers -------------------------------------------------------------------------

    def submit(
        self,
        parts: Sequence[tuple[RevisionRef, float]],
        prompt: list[int],
        sampling: Sampling,
        on_token: OnToken | None = None,
        deadline: float | None = None,
    ) -> Generation:
        """Queue a request (`deadline`: time.monotonic()). ResourceExhausted if the queue
        is full, Unavailable if a part is not resident or the scheduler has stopped."""
        sampling.check()
        self.engine.check_prompt(prompt)
        with self._lock:
            if self._closed:
                raise Unavailable("this node is stopping; retry on another")
            if self._places >= self.max_queue:
                raise ResourceExhausted(
                    f"{self.max_queue} requests are already waiting on this node; retry later"
                )
            self._places += 1
        try:
            hold = self.engine.hold(parts)
        except BaseException:
            with self._lock:
                self._places -= 1
            raise
        eos = self.engine.eos_token_id
        generation = Generation(prompt, sampling, hold, eos, on_token, deadline)
        with self._lock:
            self._waiting.append(generation)
            self._lock.notify_all()
        return generation

    def start(self) -> Scheduler:
        """Run steps on a thread of its own until `close`."""
        self._thread = threading.Thread(target=self._loop, name="scheduler", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop; whatever has not finished fails with Unavailable."""
        with self._lock:
            self._closed = True
            self._lock.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=30)
        else:
            self._stop_all()

    # the loop ------------------------------------------------------------------------

    def step(self) -> bool:
        """One step (see the module's docstring); False if there was nothing to run."""
        self._drop_stopped(time.monotonic())
        try:
            if self._cohort is None:
                self._cohort = self._form_cohort()
            if not self._running and self._cohort is None:
                return False
            if self.on_step is not None:
                self.on_step(len(self._running) + (self._cohort.batch.rows if self._cohort else 0))
            if self._running:
                self._decode()
            if self._cohort is not None:
                self._prefill(self._cohort)
        except Exception as exc:  # every running request learns why; the next step is clean
            log.exception("a step failed")
            self._end_running(exc)
        return True

    def _loop(self) -> None:
        while self._wait_for_work():
            while not self._closed and self.step():
                pass
        self._stop_all()

    def _wait_for_work(self) -> bool:
        with self._lock:
            if self._blocked:  # slots leased elsewhere (a score): an arrival, or soon
                self._lock.wait(RETRY_S)
                return not self._closed
            self._lock.wait_for(lambda: self._closed or bool(self._waiting))
            if self.window_s > 0:  # idle: let a burst arrive and prefill together
                self._lock.wait_for(
                    lambda: self._closed or len(self._waiting) >= self.max_batch, self.window_s
                )
            return not self._closed

    def _decode(self) -> None:
        rows = self._running
        ids = torch.tensor([[g.tokens[-1]] for g in rows], device=self._batch.device)
        with self.engine.model_pass():
            logits = self._decode_pass(ids)
        kept = self._emit(rows, logits)
        if len(kept) < len(rows):
            self._batch.keep(kept)
            self._running = [rows[i] for i in kept]

    def _decode_pass(self, ids: torch.Tensor) -> torch.Tensor:
        if self.graphs is not None:
            try:
                return self.graphs.forward(self._batch, ids)
            except Exception:  # no length moved: the same pass runs again without them
                log.exception("a captured decode pass failed; decoding without graphs")
                self.graphs = None
                self._batch.keep_storage = False
        return self._batch.forward(ids)

    def _prefill(self, cohort: _Cohort) -> None:
        rows = cohort.batch.rows
        budget = max(self.step_tokens - len(self._running), rows)
        stop = min(cohort.fed + budget // rows, cohort.ids.shape[1])
        with self.engine.model_pass():
            logits = cohort.batch.forward(
                cohort.ids[:, cohort.fed : stop], cohort.mask[:, cohort.fed : stop]
            )
        cohort.fed = stop
        for g in cohort.members:
            g.seen_in(rows)
        if stop < cohort.ids.shape[1]:
            self._unread = logits
            return
        self._cohort = None
        kept = self._emit(cohort.members, logits)
        cohort.batch.keep(kept)
        self._batch.extend(cohort.batch)
        self._running += [cohort.members[i] for i in kept]

    def _emit(self, rows: list[Generation], logits: torch.Tensor) -> list[int]:
        """Each row's next token; the rows that go on."""
        greedy = logits.argmax(dim=-1).tolist()  # read back: every pass so far has finished
        self._unread = None
        kept = []
        for i, g in enumerate(rows):
            g.seen_in(len(rows))
            token = greedy[i] if g.sampler.greedy else g.sampler.draw(logits[i])
            if g.add(token):
                self._end(g, Output(g.tokens, g.batch_size))
            else:
                kept.append(i)
        return kept

    # joining and leaving --------------------------------------------------------------

    def _form_cohort(self) -> _Cohort | None:
        with self._lock:
            room = self.max_batch - len(self._running)
            waiting = list(self._waiting)
        members, failed = self._seat(waiting, room)
        gone = {id(g) for g in members} | {id(g) for g, _ in failed}
        with self._lock:
            self._waiting = deque(g for g in self._waiting if id(g) not in gone)
            self._places -= len(gone)
            self._blocked = not members and bool(self._waiting)
        for g, exc in failed:
            self._end(g, exc)
        if not members:
            return None
        try:
            return self._cohort_of(members)
        except Exception as exc:  # they learn why; the step fails what was running
            for g in members:
                self._end(g, exc)
            raise

    def _seat(
        self, waiting: list[Generation], room: int
    ) -> tuple[list[Generation], list[tuple[Generation, Exception]]]:
        """Slot leases for up to `room` waiting requests, in order (those seated), and the
        requests that can never have one (those failed). A request for which no slot can
        be had while other requests hold slots stays waiting: they give theirs back."""
        seated: list[Generation] = []
        failed: list[tuple[Generation, Exception]] = []
        blocked = math.inf  # a new slot of this rank or more cannot be had: skip those
        for g in waiting:
            if len(seated) >= room:
                break
            if g.hold.rank >= blocked and not self.engine.has_slot(g.hold):
                continue
            try:
                g.lease = self.engine.take_slot(g.hold)
                seated.append(g)
            except ResourceExhausted as exc:
                if self.engine.leased():
                    blocked = min(blocked, g.hold.rank)
                else:  # every slot it fits is pinned: none will come back
                    failed.append((g, exc))
            except Exception as exc:
                failed.append((g, exc))
        return seated, failed

    def _cohort_of(self, members: list[Generation]) -> _Cohort:
        width = max(len(g.prompt) for g in members)
        device = self._batch.device
        ids = torch.full((len(members), width), self.engine.pad_token_id, device=device)
        mask = torch.zeros((len(members), width), dtype=torch.long, device=device)
        for i, g in enumerate(members):
            ids[i, width - len(g.prompt) :] = torch.tensor(g.prompt, device=device)
            mask[i, width - len(g.prompt) :] = 1
        return _Cohort(members, self._new_batch([g.slot for g in members]), ids, mask)

    def _drop_stopped(self, now: float) -> None:
        with self._lock:
            waiting = list(self._waiting)
        for g in waiting:
            if (why := g.stopped(now)) is not None:
                with self._lock:
                    self._waiting.remove(g)
                    self._places -= 1
                self._end(g, why)
        kept = self._keep_going(self._running, now)
        if len(kept) < len(self._running):
            self._batch.keep(kept)
            self._running = [self._running[i] for i in kept]
        cohort = self._cohort
        if cohort is not None:
            kept = self._keep_going(cohort.members, now)
            if not kept:
                self._cohort = None
            elif len(kept) < len(cohort.members):
                cohort.batch.keep(kept)
                index = torch.tensor(kept, device=cohort.ids.device)
                cohort.ids, cohort.mask = cohort.ids[index], cohort.mask[index]
                cohort.members = [cohort.members[i] for i in kept]

    def _keep_going(self, rows: list[Generation], now: float) -> list[int]:
        kept = []
        for i, g in enumerate(rows):
            if (why := g.stopped(now)) is None:
                kept.append(i)
            else:
                self._end(g, why)
        return kept

    def _end(self, g: Generation, outcome: Output | BaseException) -> None:
        if g.lease is None:  # still waiting: it holds its revisions, no slot
            self.engine.drop(g.hold)
        else:
            self._settle()  # no kernel may still read the slot once its lease is released
            self.engine.release(g.lease)
        if isinstance(outcome, Output):
            g.done.set_result(outcome)
        else:
            g.done.set_exception(outcome)

    def _settle(self) -> None:
        """Wait for the last pass (on a GPU, kernels run after the call returns)."""
        unread, self._unread = self._unread, None
        if unread is not None:
            try:
                unread[:1, :1].cpu()
            except Exception:  # a failed device: its requests fail all the same
                log.exception("the last pass did not finish")

    def _end_running(self, error: BaseException) -> None:
        for g in self._running + (self._cohort.members if self._cohort else []):
            self._end(g, error)
        self._running, self._cohort = [], None
        self._batch = self._new_running()

    def _stop_all(self) -> None:
        stopping = Unavailable("this node is stopping; retry on another")
        self._end_running(stopping)
        with self._lock:
            waiting, self._waiting = list(self._waiting), deque()
            self._places -= len(waiting)
        for g in waiting:
            self._end(g, stopping)

    def _new_batch(self, slots: list[int]) -> KvBatch:
        return KvBatch(self.engine.model, slots, self.engine.model_device)

    def _new_running(self) -> StaticKvBatch:
        return StaticKvBatch(
            self.engine.model, self.engine.model_device, keep_storage=self.graphs is not None
        )
