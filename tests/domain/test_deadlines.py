"""The caller's deadline bounds the waits made on its behalf, less a margin to answer."""

from __future__ import annotations

import pytest

from mint.deadlines import MAX_MARGIN_S, MIN_MARGIN_S, caller_deadline, time_left


def test_without_a_deadline_a_wait_takes_its_own_bound() -> None:
    assert time_left(20.0) == 20.0


def test_a_deadline_cuts_a_wait_short_and_keeps_a_margin() -> None:
    with caller_deadline(5.0):
        assert 5.0 - MAX_MARGIN_S <= time_left(20.0) <= 5.0 - MIN_MARGIN_S
        assert time_left(1.0) == 1.0  # a shorter bound of the wait's own still holds
    assert time_left(20.0) == 20.0  # the scope ends with the call


def test_no_time_left_is_zero_never_negative() -> None:
    with caller_deadline(0.1):
        assert time_left(20.0) == 0.0
    with caller_deadline(-3.0):  # already past
        assert time_left(20.0) == 0.0


@pytest.mark.parametrize("remaining", [1.0, 5.0, 30.0, 600.0])
def test_the_margin_stays_within_its_bounds(remaining: float) -> None:
    with caller_deadline(remaining):
        margin = remaining - time_left(10_000.0)
    assert MIN_MARGIN_S - 0.01 <= margin <= MAX_MARGIN_S + 0.01
