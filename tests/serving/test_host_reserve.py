"""The host reserve: buffers written ahead of loads, within its bytes."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest
import torch

from mint.serving.host_reserve import DEPTH, HostReserve

KIB = 1024


@pytest.fixture
def takes() -> list[bool]:
    return []


@pytest.fixture
def reserve(takes: list[bool]) -> Iterator[HostReserve]:
    reserve = HostReserve(1024 * KIB, on_take=takes.append)
    yield reserve
    reserve.close()


def until(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "the reserve never got there"
        time.sleep(0.005)


def test_a_size_asked_for_once_is_kept_ready_and_then_taken_from_the_reserve(
    reserve: HostReserve, takes: list[bool]
) -> None:
    assert reserve.take(4 * KIB) is None and takes == [False]  # a miss: none made yet
    until(lambda: reserve.ready(4 * KIB) == DEPTH)
    buffer = reserve.take(4 * KIB)
    assert buffer is not None and takes == [False, True]
    assert buffer.dtype == torch.uint8 and buffer.numel() == 4 * KIB
    until(lambda: reserve.ready(4 * KIB) == DEPTH)  # made again
    assert reserve.held_bytes == DEPTH * 4 * KIB


def test_sizes_asked_for_least_recently_give_way_one_buffer_at_a_time(
    reserve: HostReserve,
) -> None:
    big, small = 300 * KIB, 100 * KIB
    reserve.take(big)
    until(lambda: reserve.ready(big) == 3)  # all the reserve holds of them
    reserve.take(small)  # two sizes now: small's share is 1,024 // (2 x 100) = 5
    until(lambda: reserve.pending == 0)
    assert (reserve.ready(big), reserve.ready(small)) == (1, 5)  # two big ones gave way
    assert reserve.held_bytes == big + 5 * small


def test_sizes_taken_in_turn_share_the_reserve_without_evicting_each_other(
    reserve: HostReserve, takes: list[bool]
) -> None:
    """Two sizes whose full depths would not fit together: each gets its share, every
    take hits, and each take makes one buffer again, none evicted to be made twice."""
    a, b = 60 * KIB, 70 * KIB  # 8 of each: 1,040 KiB, over the reserve's 1,024
    reserve.take(a)
    reserve.take(b)  # two sizes in use: b's share is 1,024 // (2 x 70) = 7
    until(lambda: reserve.pending == 0)
    made = reserve.made
    assert (reserve.ready(a), reserve.ready(b)) == (DEPTH, 7) and made == DEPTH + 7
    for _ in range(10):
        for size in (a, b):
            assert reserve.take(size) is not None
            until(lambda: reserve.pending == 0)
    assert reserve.made - made == 20 and takes[2:] == [True] * 20
    assert (reserve.ready(a), reserve.ready(b)) == (DEPTH, 7)


def test_a_size_over_the_reserve_is_never_kept_and_a_closed_one_gives_none(
    reserve: HostReserve, takes: list[bool]
) -> None:
    assert reserve.take(2048 * KIB) is None and reserve.take(0) is None
    time.sleep(0.05)
    assert reserve.held_bytes == 0 and takes == [False, False]
    reserve.take(4 * KIB)
    until(lambda: reserve.ready(4 * KIB) == DEPTH)
    reserve.close()
    assert reserve.take(4 * KIB) is None and reserve.held_bytes == 0


def test_a_buffer_that_cannot_be_made_leaves_loads_to_their_own_bytes(
    reserve: HostReserve, takes: list[bool], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Out of memory in the filler: nothing is held or owed for it, and once memory is
    there again the size is made as before."""
    empty = torch.empty
    refused = 12 * KIB

    def short_of_memory(*size: int, **options: object) -> torch.Tensor:
        if size == (refused,):
            raise RuntimeError("DefaultCPUAllocator: can't allocate memory")
        return empty(*size, **options)  # type: ignore[call-overload,no-any-return]

    monkeypatch.setattr(torch, "empty", short_of_memory)
    assert reserve.take(refused) is None
    until(lambda: reserve.pending == 0)
    assert reserve.ready(refused) == 0 and reserve.held_bytes == 0 and reserve.made == 0
    monkeypatch.setattr(torch, "empty", empty)
    assert reserve.take(refused) is None  # still a miss, and asks for them again
    until(lambda: reserve.ready(refused) == DEPTH)
