"""A request takes its slot lease when it joins a cohort, not when it is queued: queued
requests hold their revisions on the node but no slot, so more queued requests for
distinct adapters than there are slots all run, a request that finds no slot waits
without holding up those behind it, and mixed ranks run from their own rank classes
under continuous batching, equal to PEFT."""

from __future__ import annotations

import time

import pytest

from mint.domain.errors import DeadlineExceeded, ResourceExhausted
from mint.serving.engine import ServingEngine, key_of, stack_key
from mint.serving.requests import Sampling
from mint.serving.scheduler import Scheduler
from tests.serving.conftest import Pair
from tests.serving.test_generate import Parts, peft_greedy, run
from tests.serving.test_rank_classes import stack_r8_r16

PROMPT = [72, 105, 33]


def leases(engine: ServingEngine) -> int:
    return sum(c.leased for c in engine.rank_classes())


def test_more_queued_adapters_than_slots_all_run_and_the_queued_hold_no_slot(
    ranks: Pair,
) -> None:
    engine = ranks.engine(slots=3)  # two slots of rank 32
    r1, r8, r16 = (ranks.refs[n] for n in ("r1", "r8", "r16"))
    asks: list[tuple[Parts, str]] = [
        ([(r1, 1.0)], "r1"),
        ([(r8, 1.0)], "r8"),
        ([(r16, 1.0)], "r16"),
        ([(r8, 0.7), (r16, 0.5)], stack_r8_r16(ranks)),
    ]
    scheduler = Scheduler(engine)
    queued = [scheduler.submit(parts, PROMPT, Sampling(6)) for parts, _ in asks]
    assert leases(engine) == 0 and len(engine.table) == 2, "queued requests took slots"
    scheduler.step()
    assert [g.lease is not None for g in queued] == [True, True, False, False]
    assert engine.table.in_use(key_of(r16)) == 0 and key_of(r16) not in engine.table
    assert stack_key(asks[3][0]) not in engine.table, "a queued stack was built"
    assert not engine.evict(r16), "a queued request's revision left the node"
    run(scheduler)
    for g, (_, name) in zip(queued, asks, strict=True):
        assert g.result().tokens == peft_greedy(ranks, PROMPT, name, 6), name
    assert leases(engine) == 0


def test_a_request_without_a_slot_does_not_hold_up_those_behind_it(ranks: Pair) -> None:
    engine = ranks.engine(slots=2)  # one slot
    r1, r8 = ranks.refs["r1"], ranks.refs["r8"]
    scheduler = Scheduler(engine)
    first = scheduler.submit([(r1, 1.0)], PROMPT, Sampling(12))
    scheduler.step()
    blocked = scheduler.submit([(r8, 1.0)], PROMPT, Sampling(3))
    late = scheduler.submit([(r8, 1.0)], PROMPT, Sampling(3), deadline=time.monotonic() + 0.2)
    same = scheduler.submit([(r1, 1.0)], [87, 111], Sampling(3))  # its slot is filled: runs
    scheduler.step()
    assert same.lease is not None and blocked.lease is None and late.lease is None
    time.sleep(0.2)
    run(scheduler)
    with pytest.raises(DeadlineExceeded):
        late.result(timeout=0)
    assert same.result().tokens == peft_greedy(ranks, [87, 111], "r1", 3)
    assert blocked.result().tokens == peft_greedy(ranks, PROMPT, "r8", 3)
    assert first.result().tokens == peft_greedy(ranks, PROMPT, "r1", 12)
    assert leases(engine) == 0


def test_a_request_whose_every_slot_is_pinned_is_refused(ranks: Pair) -> None:
    engine = ranks.engine(slots=2)
    engine.evict(ranks.refs["r1"])
    engine.load(ranks.refs["r1"], ranks.weights["r1"], pinned=True)  # the one slot
    scheduler = Scheduler(engine)
    refused = scheduler.submit([(ranks.refs["r8"], 1.0)], PROMPT, Sampling(3))
    assert not scheduler.step()
    with pytest.raises(ResourceExhausted, match="pinned or in use"):
        refused.result(timeout=0)
    assert engine.evict(ranks.refs["r8"]), "the refused request still holds its revision"


def test_mixed_ranks_join_mid_generation_from_their_own_classes(ranks: Pair) -> None:
    engine = ranks.engine(slots=3, rank_classes="auto")  # ranks 1 … 32, two slots each
    r1, r8, r16 = (ranks.refs[n] for n in ("r1", "r8", "r16"))
    scheduler = Scheduler(engine)
    first = scheduler.submit([(r16, 1.0)], [72, 105, 33, 9, 200], Sampling(12))
    for _ in range(3):
        scheduler.step()
    joining: list[tuple[Parts, list[int], str]] = [
        ([(r1, 1.0)], [87, 111], "r1"),
        ([(r8, 0.7), (r16, 0.5)], [65, 66, 67, 68, 69], stack_r8_r16(ranks)),
        ([], [1, 2, 3], "__base__"),
        ([(r8, 1.0)], [7, 8, 9, 10], "r8"),
    ]
    later = [scheduler.submit(parts, prompt, Sampling(10)) for parts, prompt, _ in joining]
    run(scheduler)
    assert first.result().tokens == peft_greedy(ranks, [72, 105, 33, 9, 200], "r16", 12)
    for g, (_, prompt, name) in zip(later, joining, strict=True):
        assert g.result().tokens == peft_greedy(ranks, prompt, name, 10), name
    filled = {c.rank: c.filled for c in engine.rank_classes()}
    assert filled == {1: 1, 2: 0, 4: 0, 8: 1, 16: 1, 32: 1}  # the stack (24) in rank 32
