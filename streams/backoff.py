"""The stream processors' wait between failed rounds (the projector's and the trainer's)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Backoff:
    """Waits that double after each failure up to a cap, and start over after a success."""

    first_s: float = 0.5
    cap_s: float = 30.0
    next_s: float = 0.0

    def failed(self) -> float:
        self.next_s = min(self.cap_s, self.next_s * 2 or self.first_s)
        return self.next_s

    def succeeded(self) -> None:
        self.next_s = 0.0
