"""The host reserve: buffers written ahead of loads, within its bytes."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest
import torch

from mint.serving.host_reserve import DEPTH, HostReserve


@pytest.fixture
def takes() -> list[bool]:
    return []


@pytest.fixture
def reserve(takes: list[bool]) -> Iterator[HostReserve]:
    reserve = HostReserve(1 << 20, on_take=takes.append)
    yield reserve
    reserve.close()


def until(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "the reserve never filled"
        time.sleep(0.005)


def test_a_size_taken_once_is_kept_ready_and_then_taken_from_the_reserve(
    reserve: HostReserve, takes: list[bool]
) -> None:
    first = reserve.take(4096)
    assert first.dtype == torch.uint8 and first.numel() == 4096 and takes == [False]
    until(lambda: reserve.held_bytes == DEPTH * 4096)
    second = reserve.take(4096)
    assert takes == [False, True] and second.numel() == 4096
    assert second.data_ptr() != first.data_ptr()
    until(lambda: reserve.held_bytes == DEPTH * 4096)  # made again


def test_the_reserve_holds_no_more_than_its_bytes_and_gives_old_sizes_up(
    reserve: HostReserve,
) -> None:
    big = 300 * 1024  # three fit in 1 MiB
    reserve.take(big)
    until(lambda: reserve.held_bytes == 3 * big)
    reserve.take(100 * 1024)  # newer: the big ones give way
    until(lambda: reserve.held_bytes == 2 * big + 3 * 100 * 1024)
    time.sleep(0.05)
    assert reserve.held_bytes <= 1 << 20


def test_a_size_over_the_reserve_is_made_when_asked_and_never_kept(
    reserve: HostReserve, takes: list[bool]
) -> None:
    assert reserve.take(2 << 20).numel() == 2 << 20
    assert reserve.take(0).numel() == 0
    time.sleep(0.05)
    assert reserve.held_bytes == 0 and takes == [False, False]
