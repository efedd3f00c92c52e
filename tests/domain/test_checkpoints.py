"""Signed checkpoints: the format, the signer's rounds, and what the verifier concludes
from them (pure: in-memory log and store; tests/audit/test_signed_history.py runs the
same against Kafka)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from mint.audit.checkpoints import SignedHistory
from mint.domain import events as ev
from mint.domain.errors import InvalidArgument
from mint.eventlog import checkpoints as cp
from mint.eventlog.chain import seal
from mint.eventlog.port import Metadata, Position, Recorded, build_envelopes
from mint.eventlog.signer import CheckpointSigner
from mint.v1.checkpoints_pb2 import Checkpoint, SignedCheckpoint
from tests.audit.signing import new_key


class MemoryStore:
    def __init__(self) -> None:
        self.rows: list[tuple[int, bytes]] = []

    def append(self, partition: int, signed: bytes) -> None:
        self.rows.append((partition, signed))

    def last(self, partition: int) -> bytes | None:
        return next((s for p, s in reversed(self.rows) if p == partition), None)

    def read_all(self) -> Iterator[tuple[int, str, bytes]]:
        for i, (p, s) in enumerate(self.rows):
            yield p, f"row {i}", s

    def close(self) -> None:
        pass


class MemoryLog:
    """Partition 0 only, offsets from 0."""

    def __init__(self) -> None:
        self.records: list[Recorded] = []
        self.heads: dict[str, tuple[int, bytes]] = {}

    def append(self, stream_id: str, n: int) -> None:
        version, prev = self.heads.get(stream_id, (0, b""))
        moves = [ev.ChannelMoved("latest", version + i, 0) for i in range(1, n + 1)]
        for e in build_envelopes(stream_id, version, prev, moves, Metadata("t", "r")):
            self.records.append(Recorded(e, Position(0, len(self.records))))
            self.heads[stream_id] = (e.stream_version, e.hash)

    def read(self, partition: int, after: int) -> list[Recorded]:
        return self.records[after:] if partition == 0 else []


@pytest.fixture
def keyed(tmp_path: Path) -> tuple[cp.SigningKey, dict]:
    key, public = new_key(tmp_path)
    return key, cp.public_keys([public.read_bytes()])


def _signer(key: cp.SigningKey, store: MemoryStore, log: MemoryLog) -> CheckpointSigner:
    return CheckpointSigner(key, store, log.read, lambda: [0], "test")


def test_a_checkpoint_opens_with_its_key_only(keyed: tuple, tmp_path: Path) -> None:
    key, keys = keyed
    signed = key.sign(Checkpoint(format=1, partition=2, sequence=7))
    opened = cp.open_signed(signed, keys)
    assert (opened.partition, opened.sequence, opened.key_id) == (2, 7, key.key_id)
    assert len(key.key_id) == 16 and set(key.key_id) <= set("0123456789abcdef")
    other = cp.public_keys([new_key(tmp_path, "other")[1].read_bytes()])
    with pytest.raises(cp.BadCheckpoint, match=f"signed by key {key.key_id}, not by a key given"):
        cp.open_signed(signed, other)
    outer = SignedCheckpoint.FromString(signed)
    body = Checkpoint.FromString(outer.checkpoint)
    body.sequence = 8  # altered after signing
    outer.checkpoint = body.SerializeToString()
    with pytest.raises(cp.BadCheckpoint, match=r"signature does not verify .*forged or altered"):
        cp.open_signed(outer.SerializeToString(), keys)
    with pytest.raises(cp.BadCheckpoint, match="does not parse"):
        cp.open_signed(b"\xff\xff", keys)


def test_a_bad_key_is_refused_with_how_to_make_one() -> None:
    with pytest.raises(InvalidArgument, match="openssl genpkey -algorithm ed25519"):
        cp.SigningKey.from_pem("not a key")


def test_a_span_names_each_streams_last_event_and_splits_into_records() -> None:
    log = MemoryLog()
    log.append("a", 2)
    log.append("b", 1)
    log.append("a", 1)
    span = cp.span_of(log.read(0, 1), 1)
    assert (span.from_offset, span.to_offset) == (1, 4)
    assert [(h.stream_id, h.version, h.offset) for h in span.heads] == [("a", 3, 3), ("b", 1, 2)]
    assert span.heads[0].hash == log.heads["a"][1]
    many = cp.Span(0, 9, [span.heads[0]] * (cp.MAX_HEADS + 1))
    chunks = cp.checkpoints_of(many, 3, 5, "r1")
    assert [(c.sequence, len(c.heads), c.partition) for c in chunks] == [
        (5, cp.MAX_HEADS, 3),
        (6, 1, 3),
    ]
    assert cp.checkpoints_of(cp.Span(4, 4, []), 0, 1, "r1") == []


def test_the_signer_signs_what_changed_and_numbers_on(keyed: tuple) -> None:
    key, keys = keyed
    store, log = MemoryStore(), MemoryLog()
    log.append("a", 3)
    signer = _signer(key, store, log)
    assert signer.sign_once() == 1
    assert signer.sign_once() == 0  # nothing new: nothing signed
    log.append("b", 1)
    # Another replica taking the partition numbers on from the stored checkpoint.
    assert _signer(key, store, log).sign_once() == 1
    opened = [cp.open_signed(s, keys) for _, s in store.rows]
    assert [(c.sequence, c.from_offset, c.to_offset) for c in opened] == [(1, 0, 3), (2, 3, 4)]
    assert [h.stream_id for h in opened[1].heads] == ["b"]


def _history(keys: dict, store: MemoryStore, records: list[Recorded]) -> list[str]:
    history = SignedHistory(keys)
    history.add(store.read_all())
    for _ in history.watch(records):
        pass
    return [str(p) for p in history.finish()]


def _signed_log(key: cp.SigningKey) -> tuple[MemoryStore, MemoryLog]:
    store, log = MemoryStore(), MemoryLog()
    log.append("acme/tone", 5)
    log.append("acme/other", 2)
    _signer(key, store, log).sign_once()
    log.append("acme/tone", 2)
    _signer(key, store, log).sign_once()
    log.append("acme/other", 1)  # after the last checkpoint: not vouched for yet
    return store, log


def test_an_untouched_log_matches_its_checkpoints(keyed: tuple) -> None:
    key, keys = keyed
    store, log = _signed_log(key)
    assert _history(keys, store, log.records) == []


def test_truncated_deleted_and_rewritten_streams_are_named(keyed: tuple) -> None:
    key, keys = keyed
    store, log = _signed_log(key)
    tone = [r for r in log.records if r.envelope.stream_id == "acme/tone"]
    cut = [r for r in log.records if r not in tone[-2:]]
    assert _history(keys, store, cut) == [
        "acme/tone v7 at checkpoint 2 of partition 0: the stream ends at v5, but checkpoint 2 "
        "of partition 0 signed v7 (offset 8): its last 2 events were removed (the log was "
        "truncated)"
    ]
    gone = [r for r in log.records if r.envelope.stream_id != "acme/tone"]
    (deleted,) = _history(keys, store, gone)
    assert "the stream is not in the log" in deleted and "whole stream was deleted" in deleted
    rewritten = list(log.records)
    last = rewritten.index(tone[-1])
    envelope = type(tone[-1].envelope)()
    envelope.CopyFrom(tone[-1].envelope)
    envelope.actor = "mallory"
    rewritten[last] = Recorded(seal(envelope, envelope.prev_hash), tone[-1].position)
    (problem,) = _history(keys, store, rewritten)
    assert problem.startswith("acme/tone v7 at checkpoint 2 of partition 0: the log's v7 has hash")
    assert problem.endswith("the log was rewritten after it was signed (hash chains recomputed)")


def test_deleted_and_forged_checkpoints_are_named(keyed: tuple) -> None:
    key, keys = keyed
    store, log = _signed_log(key)
    first = store.rows.pop(0)
    assert _history(keys, store, log.records) == [
        "partition 0: checkpoints 1 of 1..2 are missing: deleted (the streams they signed are "
        "vouched for no more)"
    ]
    store.rows = []
    assert _history(keys, store, log.records) == [
        "partition 0: has events but no signed checkpoint: its checkpoints were deleted, or "
        "none was signed yet (a registry with a signing key signs every checkpoint_every_s)"
    ]
    outer = SignedCheckpoint.FromString(first[1])
    outer.signature = bytes(64)
    store.rows = [(0, outer.SerializeToString())]
    problems = _history(keys, store, log.records)
    assert "checkpoint at row 0: its signature does not verify" in problems[0]
