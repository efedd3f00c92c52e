"""One generation request as the scheduler runs it, and the caller's handle on it."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass

from mint.domain.errors import Cancelled, DeadlineExceeded, DomainError

from .leases import Hold, Lease
from .requests import Sampling
from .sampling import Sampler

OnToken = Callable[[int], None]


@dataclass(frozen=True)
class Output:
    tokens: list[int]
    batch_size: int  # the most requests in one forward pass it took part in


class Generation:
    """Made by `Scheduler.submit` with a `hold` on its revisions; the scheduler gives it
    a `lease` (a slot) when it joins a cohort, and releases both when it ends."""

    def __init__(
        self,
        prompt: list[int],
        sampling: Sampling,
        hold: Hold,
        eos_token_id: int,
        on_token: OnToken | None = None,
        deadline: float | None = None,
    ) -> None:
        self.prompt, self.sampling, self.hold = prompt, sampling, hold
        self.lease: Lease | None = None  # none while it waits
        self.sampler = Sampler(sampling)
        self.eos = eos_token_id if sampling.stop_at_eos else None
        self.on_token, self.deadline = on_token, deadline  # deadline: time.monotonic()
        self.tokens: list[int] = []
        self.batch_size = 0
        self.done: Future[Output] = Future()
        self._cancelled = False

    def cancel(self) -> None:
        """Stop at the next step (the caller went away); no-op once it has ended."""
        self._cancelled = True

    def result(self, timeout: float | None = None) -> Output:
        return self.done.result(timeout)

    def add(self, token: int) -> bool:
        """Record (and stream) one new token; True when that was the last one."""
        self.tokens.append(token)
        if self.on_token is not None:
            self.on_token(token)
        return len(self.tokens) >= self.sampling.max_new_tokens or token == self.eos

    def stopped(self, now: float) -> DomainError | None:
        """Why it must leave before it is complete, if it must."""
        if self._cancelled:
            return Cancelled(f"cancelled after {len(self.tokens)} tokens")
        if self.deadline is not None and now >= self.deadline:
            return DeadlineExceeded(
                f"the deadline passed after {len(self.tokens)} of "
                f"{self.sampling.max_new_tokens} tokens; ask for fewer or allow more time"
            )
        return None

    @property
    def slot(self) -> int:
        if self.lease is None:
            raise RuntimeError("a waiting request has no slot yet")
        return self.lease.slot

    def seen_in(self, rows: int) -> None:
        self.batch_size = max(self.batch_size, rows)
