"""Where a rollback goes when no revision is named: where the channel pointed before its
last move, read from the adapter's history."""

from __future__ import annotations

from collections.abc import Sequence

from mint.domain.events import ChannelMoved

from .errors import FailedPrecondition
from .types import Event


def rollback_target(
    ref: str, channel: str, history: Sequence[Event], request_id: str | None = None
) -> tuple[int, int]:
    """(the revision to move `channel` back to, the adapter's version it was read at). A
    rollback sent again with its `request_id` after it landed goes where it went then:
    the history up to its own move decides, so the registry answers it as the retry."""
    made = [i for i, e in enumerate(history) if request_id and e.request_id == request_id]
    if made:
        history = history[: made[0]]
    moves = [
        e.payload
        for e in history
        if isinstance(e.payload, ChannelMoved) and e.payload.channel == channel
    ]
    if not moves:
        raise FailedPrecondition(f"{ref}'s channel {channel!r} never moved: nothing to roll back")
    if moves[-1].previous_revision == 0:
        raise FailedPrecondition(
            f"{ref}'s channel {channel!r} was unset before its last move: "
            "name the revision to roll back to"
        )
    return moves[-1].previous_revision, history[-1].stream_version
