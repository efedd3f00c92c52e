"""Residency bookkeeping: LRU within a byte budget, pinning, in-use protection; and its
invariants under random operation sequences (hypothesis)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mint.domain.errors import ResourceExhausted
from mint.serving.residency import ResidentKey, SlotTable


def key(n: int, revision: int = 1) -> ResidentKey:
    return ResidentKey(f"a{n}", revision)


def test_lru_eviction_within_the_byte_budget() -> None:
    table = SlotTable(slots=10, budget_bytes=300)
    for n in range(3):
        table.admit(key(n), 100)
    table.slot_of(key(0))  # 0 becomes most recently used: 1 is now the oldest
    slot, evicted = table.admit(key(3), 100)
    assert evicted == [key(1)] and slot > 0
    assert key(1) not in table and table.used_bytes == 300


def test_slots_run_out_before_bytes() -> None:
    table = SlotTable(slots=3, budget_bytes=10_000)  # 2 usable slots
    table.admit(key(0), 1)
    table.admit(key(1), 1)
    assert table.admit(key(2), 1)[1] == [key(0)]


def test_pinned_and_in_use_adapters_are_never_evicted() -> None:
    table = SlotTable(slots=3, budget_bytes=1000)
    table.admit(key(0), 10, pinned=True)
    table.admit(key(1), 10)
    table.acquire(key(1))
    with pytest.raises(ResourceExhausted, match="pinned or in use"):
        table.admit(key(2), 10)
    table.release(key(1))
    assert table.admit(key(2), 10)[1] == [key(1)]
    assert key(0) in table


def test_revisions_are_distinct_residents() -> None:
    table = SlotTable(slots=4, budget_bytes=1000)
    one, _ = table.admit(key(0, revision=1), 10)
    two, _ = table.admit(key(0, revision=2), 10)
    assert one != two and table.slot_of(key(0, revision=1)) == one


def test_too_large_for_the_node() -> None:
    with pytest.raises(ResourceExhausted, match="exceeds the node's budget"):
        SlotTable(slots=4, budget_bytes=100).admit(key(0), 101)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["admit", "use", "done", "pin", "touch"]),
            st.integers(0, 12),
            st.integers(1, 60),
        ),
        max_size=80,
    )
)
def test_invariants_hold_under_any_sequence(ops: list[tuple[str, int, int]]) -> None:
    table = SlotTable(slots=6, budget_bytes=150)
    in_use: dict[ResidentKey, int] = {}
    for op, n, size in ops:
        k = key(n)
        try:
            if op == "admit":
                _, evicted = table.admit(k, size, pinned=(n == 0))
                assert not any(in_use.get(e) for e in evicted), "evicted an in-use adapter"
            elif op == "use" and k in table:
                table.acquire(k)
                in_use[k] = in_use.get(k, 0) + 1
            elif op == "done" and in_use.get(k):
                table.release(k)
                in_use[k] -= 1
            elif op == "pin" and k in table:
                table.pin(k, pinned=False)
            elif op == "touch":
                table.slot_of(k)
        except ResourceExhausted:
            pass
        assert table.used_bytes == sum(e.nbytes for e in table._entries.values()) <= 150
        assert len(table) <= 5
        assert all(k in table for k, count in in_use.items() if count), "in-use key vanished"


def _state(table: SlotTable) -> tuple[list[tuple[object, ...]], list[list[int]]]:
    """Every entry's facts in LRU order, and each class's free slots (the table's insides)."""
    entries = table._entries.items()
    facts: list[tuple[object, ...]] = [
        (k, e.slot, e.nbytes, e.rank_class, e.pinned, e.in_use) for k, e in entries
    ]
    return facts, [list(free) for free in table._free]


def test_a_failed_admit_evicts_nothing() -> None:
    table = SlotTable(slots=6, budget_bytes=100)
    table.admit(key(0), 40)
    table.admit(key(1), 50, pinned=True)
    with pytest.raises(ResourceExhausted, match="pinned or in use"):
        table.admit(key(2), 60)  # evicting the 40 bytes would still leave too little room
    assert key(0) in table and table.used_bytes == 90


def test_every_eviction_is_told_to_the_owner_with_its_slot() -> None:
    told: list[tuple[ResidentKey, int]] = []
    table = SlotTable(slots=3, budget_bytes=1000, on_evict=lambda k, s: told.append((k, s)))
    one, _ = table.admit(key(0), 10)
    two, _ = table.admit(key(1), 10)
    table.admit(key(2), 10)  # out of slots: the least recently used goes
    table.evict(key(1))
    assert told == [(key(0), one), (key(1), two)]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["admit", "use", "done", "pin"]),
            st.integers(0, 8),
            st.integers(1, 90),
        ),
        max_size=60,
    )
)
def test_an_admit_that_raises_leaves_the_table_unchanged(ops: list[tuple[str, int, int]]) -> None:
    told: list[ResidentKey] = []
    table = SlotTable(slots=5, budget_bytes=150)
    table.on_evict = lambda k, _: told.append(k)
    for op, n, size in ops:
        k = key(n)
        if op == "admit":
            before, told_before = _state(table), list(told)
            try:
                _, evicted = table.admit(k, size, pinned=(n % 3 == 0))
            except ResourceExhausted:
                assert _state(table) == before and told == told_before
                continue
            assert told[len(told_before) :] == evicted, "an eviction the owner was not told of"
        elif op == "use" and k in table:
            table.acquire(k)
        elif op == "done" and table.in_use(k):
            table.release(k)
        elif op == "pin" and k in table:
            table.pin(k, pinned=False)
