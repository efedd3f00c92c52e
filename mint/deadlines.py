"""The caller's deadline, carried along the thread that serves its request.

The RPC layer opens a scope with the time the caller has left; anything that waits on its
behalf (an append waiting for its transaction, a lock) waits no longer than that, less a
margin to carry the answer back. So a caller always hears a definite, retryable answer
from the server instead of its own DEADLINE_EXCEEDED, whose outcome it cannot know.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

_deadline: ContextVar[float | None] = ContextVar("deadline", default=None)

# Kept back from the caller's remaining time to send the answer: a fifth of it, within
# these bounds. An answer takes milliseconds on the wire, but a busy process may not get
# the CPU (and the GIL) to send it for a good part of a second.
MARGIN_SHARE = 0.2
MIN_MARGIN_S = 0.5
MAX_MARGIN_S = 2.0


@contextmanager
def caller_deadline(remaining_s: float | None) -> Iterator[None]:
    """Within this block, waits end `remaining_s` from now (None: the caller set none)."""
    token = _deadline.set(None if remaining_s is None else time.monotonic() + remaining_s)
    try:
        yield
    finally:
        _deadline.reset(token)


def time_left(default_s: float) -> float:
    """How long a wait may take: `default_s`, or less if the caller's deadline (minus the
    margin to answer) comes sooner; 0 when there is no time left."""
    deadline = _deadline.get()
    if deadline is None:
        return default_s
    remaining = deadline - time.monotonic()
    margin = min(max(remaining * MARGIN_SHARE, MIN_MARGIN_S), MAX_MARGIN_S)
    return max(0.0, min(default_s, remaining - margin))
