"""Continuous batching: requests join and leave between steps. A short request overtakes
a long one, a long prompt is prefilled in chunks without stalling running requests, a
cancelled request or one past its deadline leaves at the next step and frees its slot,
a full queue refuses at once without building anything, and a failed step fails only
the requests it ran."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from mint.domain.errors import Cancelled, DeadlineExceeded, ResourceExhausted, Unavailable
from mint.serving.engine import ServingEngine, key_of
from mint.serving.requests import Sampling
from mint.serving.scheduler import Scheduler
from tests.serving.conftest import Pair
from tests.serving.test_generate import peft_greedy, run

PROMPT = [72, 105, 33]


def leased(engine: ServingEngine, pair: Pair, name: str) -> bool:
    return engine.table.in_use(key_of(pair.refs[name])) > 0


def test_a_short_request_arriving_during_a_long_one_finishes_first(pair: Pair) -> None:
    engine = pair.engine()
    scheduler = Scheduler(engine).start()
    try:
        started = threading.Event()
        long = scheduler.submit(
            [(pair.refs["a"], 1.0)], PROMPT, Sampling(400), on_token=lambda _: started.set()
        )
        assert started.wait(30)
        short = scheduler.submit([(pair.refs["b"], 1.0)], [87, 111], Sampling(4))
        assert len(short.result(timeout=30).tokens) == 4
        assert not long.done.done(), "the short request waited for the long one"
        assert len(long.result(timeout=120).tokens) == 400
    finally:
        scheduler.close()
    assert short.result().tokens == peft_greedy(pair, [87, 111], "b", 4)


def test_a_long_prompt_is_prefilled_in_chunks_while_others_decode(pair: Pair) -> None:
    engine = pair.engine()
    scheduler = Scheduler(engine, max_batch=4, step_tokens=40)
    running = scheduler.submit([(pair.refs["a"], 1.0)], PROMPT, Sampling(30))
    scheduler.step()
    long_prompt = [(7 * i) % 250 + 3 for i in range(200)]
    late = scheduler.submit([(pair.refs["b"], 1.0)], long_prompt, Sampling(3))
    steps = 0
    while not late.tokens:  # prefilling: 39 prompt tokens a step beside one decode
        before = len(running.tokens)
        scheduler.step()
        steps += 1
        assert len(running.tokens) == before + 1, "a running request missed a step"
    assert steps == 6  # ceil(200 / 39)
    run(scheduler)
    assert late.result().tokens == peft_greedy(pair, long_prompt, "b", 3)
    assert running.result().tokens == peft_greedy(pair, PROMPT, "a", 30)


def test_a_cancelled_request_leaves_at_the_next_step_and_frees_its_slot(pair: Pair) -> None:
    engine = pair.engine()
    scheduler = Scheduler(engine)
    other = scheduler.submit([(pair.refs["b"], 1.0)], PROMPT, Sampling(8))
    cancelled = scheduler.submit([(pair.refs["a"], 1.0)], PROMPT, Sampling(100))
    for _ in range(3):
        scheduler.step()
    cancelled.cancel()
    assert leased(engine, pair, "a")
    scheduler.step()
    with pytest.raises(Cancelled, match="after 3 tokens"):
        cancelled.result(timeout=0)
    assert len(cancelled.tokens) == 3 and not leased(engine, pair, "a")
    run(scheduler)
    assert other.result().tokens == peft_greedy(pair, PROMPT, "b", 8), "its mate went on"


def test_a_request_past_its_deadline_leaves_at_the_next_step(pair: Pair) -> None:
    engine = pair.engine()
    scheduler = Scheduler(engine)
    stamps: list[float] = []
    deadline = time.monotonic() + 0.3
    late = scheduler.submit(
        [(pair.refs["a"], 1.0)],
        PROMPT,
        Sampling(512),
        on_token=lambda _: stamps.append(time.monotonic()),
        deadline=deadline,
    )
    run(scheduler)
    with pytest.raises(DeadlineExceeded, match="deadline passed"):
        late.result(timeout=0)
    assert 0 < len(stamps) < 512
    assert sum(t >= deadline for t in stamps) <= 1, "only the step under way may finish"
    assert not leased(engine, pair, "a")


def test_a_waiting_request_that_is_cancelled_never_runs(pair: Pair) -> None:
    engine = pair.engine()
    scheduler = Scheduler(engine, max_batch=1)
    first = scheduler.submit([(pair.refs["a"], 1.0)], PROMPT, Sampling(5))
    waiting = scheduler.submit([(pair.refs["b"], 1.0)], PROMPT, Sampling(5))
    scheduler.step()
    assert waiting.tokens == [] and leased(engine, pair, "a")
    assert waiting.lease is None and not leased(engine, pair, "b"), "waiting holds no slot"
    waiting.cancel()
    run(scheduler)
    with pytest.raises(Cancelled):
        waiting.result(timeout=0)
    assert waiting.tokens == [] and not leased(engine, pair, "b")
    assert len(first.result().tokens) == 5


def test_a_full_queue_refuses_at_once_and_builds_nothing(pair: Pair) -> None:
    engine = pair.engine()
    scheduler = Scheduler(engine, max_batch=1, max_queue=2)
    a, b = pair.refs["a"], pair.refs["b"]
    queued = [scheduler.submit([(a, 1.0)], PROMPT, Sampling(2)) for _ in range(2)]
    resident, slots_used = engine.resident(), len(engine.table)
    with pytest.raises(ResourceExhausted, match="2 requests are already waiting"):
        scheduler.submit([(a, 0.5), (b, 0.5)], PROMPT, Sampling(2))  # a stack: not built
    assert engine.resident() == resident and len(engine.table) == slots_used
    assert not leased(engine, pair, "b")
    scheduler.step()  # one of the two runs: a place is free again
    again = scheduler.submit([(b, 1.0)], PROMPT, Sampling(2))
    run(scheduler)
    assert all(len(g.result().tokens) == 2 for g in [*queued, again])


def test_closing_fails_what_has_not_finished(pair: Pair) -> None:
    engine = pair.engine()
    scheduler = Scheduler(engine)
    running = scheduler.submit([(pair.refs["a"], 1.0)], PROMPT, Sampling(50))
    scheduler.step()
    scheduler.close()
    with pytest.raises(Unavailable, match="stopping"):
        running.result(timeout=0)
    assert not leased(engine, pair, "a")
    with pytest.raises(Unavailable, match="stopping"):
        scheduler.submit([], PROMPT, Sampling(2))


def test_a_failed_step_fails_its_requests_and_the_next_ones_run(
    pair: Pair, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = pair.engine()
    scheduler = Scheduler(engine)
    doomed = scheduler.submit([(pair.refs["a"], 1.0)], PROMPT, Sampling(20))
    scheduler.step()
    working = engine.model_pass

    @contextmanager
    def failing() -> Iterator[Any]:
        raise RuntimeError("out of memory")
        yield

    monkeypatch.setattr(engine, "model_pass", failing)
    scheduler.step()
    monkeypatch.setattr(engine, "model_pass", working)
    with pytest.raises(RuntimeError, match="out of memory"):
        doomed.result(timeout=0)
    assert not leased(engine, pair, "a")
    after = scheduler.submit([(pair.refs["a"], 1.0)], PROMPT, Sampling(5))
    run(scheduler)
    assert after.result().tokens == peft_greedy(pair, PROMPT, "a", 5)


def test_the_step_budget_must_cover_a_full_batch(pair: Pair) -> None:
    with pytest.raises(ValueError, match="at least max_batch"):
        Scheduler(pair.engine(), max_batch=64, step_tokens=32)
