"""What the signed checkpoints vouch for, checked against the log as `verify` walks it.

The hash chain shows an event altered, dropped or moved inside a stream; it cannot show
a log rewritten with every chain recomputed, a stream's last events cut off, or a whole
stream deleted. Signed checkpoints can: each names, per stream, an event (version and
hash) the log held when it was signed. So the log must still hold, for every stream ever
signed, its newest signed version with that very hash (its chain then vouches for every
event before it); every partition with events must have checkpoints, numbered 1, 2, 3 ...
with none missing; and every checkpoint must verify with one of the given public keys.

What a verifier cannot see: events appended after the newest checkpoint (not signed
yet), and a log cut back together with its newest checkpoints. Keep a copy of the
newest checkpoint elsewhere to hold against the second; `signed_at` in the summary says
how recent it is.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from mint.eventlog.chain import ChainProblem
from mint.eventlog.checkpoints import BadCheckpoint, open_signed
from mint.eventlog.port import Recorded
from mint.v1.checkpoints_pb2 import Checkpoint
from mint.v1.events_pb2 import EventEnvelope

from .records import LogRecord


@dataclass(frozen=True)
class CheckpointProblem:
    """A problem of the checkpoints themselves, or of a partition as a whole."""

    where: str
    problem: str

    def __str__(self) -> str:
        return f"{self.where}: {self.problem}"


Problem = ChainProblem | CheckpointProblem


@dataclass(slots=True)
class SignedHead:
    """A stream's newest signed event, and what the log shows at that version."""

    version: int
    hash: bytes
    signed_in: str  # "checkpoint 3 of partition 1"
    offset: int
    found: bytes | None = None  # the log's hash at that version, once seen


@dataclass
class SignedHistory:
    keys: Mapping[str, Ed25519PublicKey]
    heads: dict[str, SignedHead] = field(default_factory=dict)
    sequences: dict[int, set[int]] = field(default_factory=dict)  # partition -> numbers
    newest: dict[int, Checkpoint] = field(default_factory=dict)  # partition -> by sequence
    problems: list[Problem] = field(default_factory=list)
    checkpoints: int = 0
    last_versions: dict[str, int] = field(default_factory=dict)  # stream -> in the log
    partitions_with_events: set[int] = field(default_factory=set)

    def add(self, checkpoints: Iterable[tuple[int, str, bytes]]) -> None:
        """Take in the stored checkpoints: (partition, where stored, SignedCheckpoint)."""
        for partition, where, value in checkpoints:
            try:
                checkpoint = open_signed(value, self.keys)
            except BadCheckpoint as exc:
                self.problems.append(CheckpointProblem(f"checkpoint at {where}", str(exc)))
                continue
            if checkpoint.partition != partition:
                self.problems.append(
                    CheckpointProblem(
                        f"checkpoint at {where}",
                        f"signs partition {checkpoint.partition} but is stored with "
                        f"partition {partition}'s: moved",
                    )
                )
                continue
            self._take(checkpoint)

    def _take(self, checkpoint: Checkpoint) -> None:
        self.checkpoints += 1
        p = checkpoint.partition
        self.sequences.setdefault(p, set()).add(checkpoint.sequence)
        if p not in self.newest or checkpoint.sequence > self.newest[p].sequence:
            self.newest[p] = checkpoint
        signed_in = f"checkpoint {checkpoint.sequence} of partition {p}"
        for head in checkpoint.heads:
            known = self.heads.get(head.stream_id)
            if known is None or head.version > known.version:
                self.heads[head.stream_id] = SignedHead(
                    head.version, head.hash, signed_in, head.offset
                )
            elif head.version == known.version and head.hash != known.hash:
                self.problems.append(
                    ChainProblem(
                        head.stream_id,
                        head.version,
                        signed_in,
                        f"signed with a different hash than {known.signed_in} signed: "
                        "two signed histories disagree",
                    )
                )

    def watch(self, records: Iterable[LogRecord]) -> Iterator[LogRecord]:
        """Pass `records` on (to verify's walk), noting what the checkpoints need."""
        for r in records:
            self.partitions_with_events.add(r.position.partition)
            if isinstance(r, Recorded):
                self._note(r.envelope)
            yield r

    def _note(self, e: EventEnvelope) -> None:
        # The highest version: an earlier event appended again does not cut the stream.
        self.last_versions[e.stream_id] = max(
            e.stream_version, self.last_versions.get(e.stream_id, 0)
        )
        head = self.heads.get(e.stream_id)
        if head is not None and head.version == e.stream_version:
            head.found = e.hash

    def finish(self) -> list[Problem]:
        """Every problem, once the walk is over."""
        problems = list(self.problems)
        for p in sorted(self.partitions_with_events | set(self.sequences)):
            problems += self._partition_problems(p)
        for stream_id, head in sorted(self.heads.items()):
            if (text := self._head_problem(stream_id, head)) is not None:
                problems.append(ChainProblem(stream_id, head.version, head.signed_in, text))
        return problems

    def _partition_problems(self, p: int) -> list[Problem]:
        numbers = self.sequences.get(p, set())
        if not numbers:
            return [
                CheckpointProblem(
                    f"partition {p}",
                    "has events but no signed checkpoint: its checkpoints were deleted, or "
                    "none was signed yet (a registry with a signing key signs every "
                    "checkpoint_every_s)",
                )
            ]
        missing = sorted(set(range(1, max(numbers) + 1)) - numbers)
        if not missing:
            return []
        shown = ", ".join(str(n) for n in missing[:10]) + (" ..." if len(missing) > 10 else "")
        return [
            CheckpointProblem(
                f"partition {p}",
                f"checkpoints {shown} of 1..{max(numbers)} are missing: deleted (the streams "
                "they signed are vouched for no more)",
            )
        ]

    def _head_problem(self, stream_id: str, head: SignedHead) -> str | None:
        where = f"{head.signed_in} signed v{head.version} (offset {head.offset})"
        last = self.last_versions.get(stream_id)
        if last is None:
            return f"the stream is not in the log, but {where}: the whole stream was deleted"
        if head.found is None:
            return (
                f"the stream ends at v{last}, but {where}: its last "
                f"{head.version - last} events were removed (the log was truncated)"
            )
        if head.found != head.hash:
            return (
                f"the log's v{head.version} has hash {head.found.hex()[:16]}..., but {where} "
                f"with hash {head.hash.hex()[:16]}...: the log was rewritten after it was "
                "signed (hash chains recomputed)"
            )
        return None

    def summary(self) -> str:
        if not self.newest:
            return "no valid signed checkpoint"
        newest = max(c.signed_at.ToDatetime() for c in self.newest.values())
        return (
            f"{self.checkpoints} signed checkpoints of {len(self.newest)} partitions, "
            f"{len(self.heads)} streams vouched for, newest signed {newest.isoformat()}Z"
        )
