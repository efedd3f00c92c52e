"""The registry application layer, over the embedded back ends and over real Kafka + S3."""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
import safetensors.torch

from mint.backends.kafka_log import KafkaEventLog
from mint.backends.local_blobs import LocalBlobStore
from mint.backends.s3_blobs import S3BlobStore
from mint.backends.sqlite_log import SqliteEventLog
from mint.deadlines import caller_deadline
from mint.domain.errors import (
    AlreadyExists,
    DataLoss,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unavailable,
    VersionConflict,
)
from mint.domain.events import ChannelMoved, Event
from mint.domain.names import AdapterRef
from mint.eventlog.port import AppendResult, Metadata
from mint.registry import Principal, Registry, Upload
from tests.keys import TEST_KEK

ADMIN = Principal("ops", frozenset({"*"}), admin=True)
ALICE = Principal("alice", frozenset({"acme"}))
REF = AdapterRef("acme", "tone")


def _embedded(tmp_path: Path, request: pytest.FixtureRequest) -> Registry:
    return Registry(
        SqliteEventLog(tmp_path / "log.db"), LocalBlobStore(tmp_path / "blobs", TEST_KEK)
    )


def _kafka_s3(tmp_path: Path, request: pytest.FixtureRequest) -> Registry:
    kafka = request.getfixturevalue("kafka")
    s3 = request.getfixturevalue("s3")
    topic = f"events-{uuid.uuid4().hex[:10]}"
    log = KafkaEventLog(kafka, topic, partitions=2, txn_prefix=topic)
    return Registry(log, S3BlobStore(s3, f"b{uuid.uuid4().hex[:12]}", TEST_KEK))


@pytest.fixture(params=[_embedded, _kafka_s3], ids=["embedded", "kafka-s3"])
def registry(
    tmp_path: Path, model_files: dict, request: pytest.FixtureRequest
) -> Iterator[Registry]:
    reg: Registry = request.param(tmp_path, request)
    reg.register_base(ADMIN, "tiny", model_files["fingerprint"], model_files["shapes"], "b1")
    reg.create_adapter(ALICE, REF, model_files["fingerprint"], "c1")
    yield reg
    reg.log.close()


def rid() -> str:
    return uuid.uuid4().hex


def blob_count(registry: Registry) -> int:
    blobs = registry.blobs
    if isinstance(blobs, S3BlobStore):
        return len(list(blobs.s3.list_objects(blobs.bucket, recursive=True)))
    assert isinstance(blobs, LocalBlobStore)
    return sum(1 for p in blobs.root.rglob("*") if p.is_file())


def events(registry: Registry) -> int:
    return len(list(registry.log.read_all()))


def test_publish_evaluate_gate_promote(registry: Registry, model_files: dict) -> None:
    upload = model_files["upload"]
    out = registry.publish_revision(
        ALICE,
        REF,
        upload,
        rid(),
        expected_version=1,
        training_run_id="run-7",
        hyperparameters={"lr": "1e-4"},
    )
    rev = out.adapter.revision(1)
    assert rev.weights_sha256 == hashlib.sha256(upload.weights).hexdigest()
    assert rev.provenance.principal == "alice"  # the authenticated caller, always
    assert registry.blobs.get(out.adapter.adapter_id, rev.weights_sha256) == upload.weights
    registry.set_gate(ALICE, REF, "stable", "safety", rid())
    with pytest.raises(FailedPrecondition, match="safety"):
        registry.move_channel(ALICE, REF, "stable", 1, rid())
    registry.record_evaluation(ALICE, REF, 1, "safety", {"acc": 0.97}, True, rid())
    promoted = registry.move_channel(ALICE, REF, "stable", 1, rid(), reason="promote")
    assert promoted.adapter.resolve("stable").number == 1
    history = registry.history(ALICE, REF)
    assert [r.envelope.stream_version for r in history] == list(range(1, 7))
    assert {r.envelope.actor for r in history} == {"alice"}


def test_retry_returns_the_first_result_and_writes_nothing(
    registry: Registry, model_files: dict
) -> None:
    request = rid()
    first = registry.publish_revision(ALICE, REF, model_files["upload"], request)
    before = events(registry), blob_count(registry)
    retry = registry.publish_revision(ALICE, REF, model_files["upload"], request)
    assert retry.result.duplicate
    assert (retry.result.first_version, retry.result.last_version) == (2, 3)
    assert retry.adapter.revisions == first.adapter.revisions
    assert (events(registry), blob_count(registry)) == before


def _other_weights(upload: Upload) -> Upload:
    """The same adapter's shapes with other values: another revision's upload."""
    tensors = {name: t * 2 for name, t in safetensors.torch.load(upload.weights).items()}
    return Upload(upload.config, safetensors.torch.save(tensors))


@pytest.mark.parametrize("other", ["move elsewhere", "archive", "erase", "publish other bytes"])
def test_a_request_id_sent_again_with_another_command_is_refused_and_changes_nothing(
    registry: Registry, model_files: dict, other: str
) -> None:
    """A request id names one command: sending it with another would otherwise answer
    'duplicate' and do nothing, and a caller would believe the other command applied."""
    published, moved = rid(), rid()
    registry.publish_revision(ALICE, REF, model_files["upload"], published)
    registry.publish_revision(ALICE, REF, _other_weights(model_files["upload"]), rid())
    registry.move_channel(ALICE, REF, "beta", 1, moved)
    before = events(registry), blob_count(registry)
    commands = {
        "move elsewhere": lambda: registry.move_channel(ALICE, REF, "beta", 2, moved),
        "archive": lambda: registry.archive(ALICE, REF, "done", moved),
        "erase": lambda: registry.erase(ALICE, REF, moved),
        "publish other bytes": lambda: registry.publish_revision(
            ALICE, REF, _other_weights(_other_weights(model_files["upload"])), published
        ),
    }
    with pytest.raises(InvalidArgument, match="already used on acme/tone by another command"):
        commands[other]()
    assert (events(registry), blob_count(registry)) == before
    state = registry.get(ALICE, REF)
    assert (state.channels["beta"], state.archived, state.erased) == (1, False, False)
    assert registry.move_channel(ALICE, REF, "beta", 1, moved).result.duplicate  # a retry


def test_refused_erase_and_publish_leave_no_object(registry: Registry, model_files: dict) -> None:
    """An erase with a stale version notes no erasure; a publish to an archived adapter
    stores no blob."""
    before = events(registry), blob_count(registry)
    with pytest.raises(VersionConflict):
        registry.erase(ALICE, REF, rid(), expected_version=7)
    assert (events(registry), blob_count(registry)) == before
    registry.archive(ALICE, REF, "done", rid())
    before = events(registry), blob_count(registry)
    with pytest.raises(FailedPrecondition, match="archived"):
        registry.publish_revision(ALICE, REF, model_files["upload"], rid())
    assert (events(registry), blob_count(registry)) == before


def test_a_stream_that_does_not_fold_is_data_loss_not_an_internal_error(
    registry: Registry, model_files: dict
) -> None:
    """What a client with write access to the log could leave under a name: an adapter's
    events without its creation."""
    squat = AdapterRef("acme", "squat")
    registry.log.append(str(squat), 0, [ChannelMoved("stable", 1, 0)], Metadata("mallory", rid()))
    with pytest.raises(DataLoss, match="no registry wrote"):
        registry.get(ALICE, squat)
    with pytest.raises(DataLoss, match="no registry wrote"):
        registry.create_adapter(ALICE, squat, model_files["fingerprint"], rid())


def test_create_retry_returns_the_same_adapter_id(registry: Registry, model_files: dict) -> None:
    ref = AdapterRef("acme", "other")
    a = registry.create_adapter(ALICE, ref, model_files["fingerprint"], "same-request")
    b = registry.create_adapter(ALICE, ref, model_files["fingerprint"], "same-request")
    assert a.adapter.adapter_id == b.adapter.adapter_id and b.result.duplicate


def test_creating_a_taken_name_is_already_exists(registry: Registry, model_files: dict) -> None:
    ref = AdapterRef("acme", "taken")
    first = registry.create_adapter(ALICE, ref, model_files["fingerprint"], rid())
    with pytest.raises(
        AlreadyExists, match=f"acme/taken already exists .id {first.adapter.adapter_id}"
    ):
        registry.create_adapter(ALICE, ref, model_files["fingerprint"], rid())


@pytest.mark.parametrize(
    ("case", "error"),
    [
        ("stale version", VersionConflict),
        ("wrong tenant", PermissionDenied),
        ("bad weights", InvalidArgument),
        ("sha mismatch", InvalidArgument),
        ("unknown adapter", NotFound),
        ("missing request id", InvalidArgument),
    ],
)
def test_refused_commands_change_nothing(
    registry: Registry, model_files: dict, case: str, error: type[Exception]
) -> None:
    upload: Upload = model_files["upload"]
    principal, ref, request, expected = ALICE, REF, rid(), None
    if case == "stale version":
        expected = 0
    elif case == "wrong tenant":
        principal = Principal("mallory", frozenset({"evil"}))
    elif case == "bad weights":
        upload = Upload(upload.config, upload.weights[:100])
    elif case == "sha mismatch":
        upload = Upload(upload.config, upload.weights, declared_sha256="0" * 64)
    elif case == "unknown adapter":
        ref = AdapterRef("acme", "nope")
    elif case == "missing request id":
        request = ""
    before = events(registry), blob_count(registry)
    with pytest.raises(error):
        registry.publish_revision(principal, ref, upload, request, expected_version=expected)
    assert (events(registry), blob_count(registry)) == before


def test_only_admins_register_bases_and_registration_is_idempotent(
    registry: Registry, model_files: dict
) -> None:
    with pytest.raises(PermissionDenied):
        registry.register_base(ALICE, "x", "a" * 64, {"w": (1, 1)}, rid())
    again = registry.register_base(ADMIN, "renamed", model_files["fingerprint"], {"w": (1,)}, rid())
    assert again.name == "tiny"  # the first registration wins


def test_list_adapters_by_tenant(registry: Registry, model_files: dict) -> None:
    registry.create_adapter(ALICE, AdapterRef("acme", "second"), model_files["fingerprint"], rid())
    page = registry.list_adapters(ALICE, "acme")
    assert [a.name for a in page.adapters] == ["second", "tone"]  # by name
    assert page.next_after is None
    with pytest.raises(PermissionDenied):
        registry.list_adapters(ALICE, "other")


def test_state_cache_sees_what_another_writer_appended(tmp_path: Path, model_files: dict) -> None:
    """Two registries over one log: each folds only new events, and never misses any."""
    first = Registry(SqliteEventLog(tmp_path / "log.db"), LocalBlobStore(tmp_path / "b", TEST_KEK))
    second = Registry(SqliteEventLog(tmp_path / "log.db"), LocalBlobStore(tmp_path / "b", TEST_KEK))
    first.register_base(ADMIN, "tiny", model_files["fingerprint"], model_files["shapes"], rid())
    first.create_adapter(ALICE, REF, model_files["fingerprint"], rid())
    first.publish_revision(ALICE, REF, model_files["upload"], rid())
    assert first.get(ALICE, REF).version == 3
    second.move_channel(ALICE, REF, "stable", 1, rid())
    second.publish_revision(ALICE, REF, model_files["upload"], rid())
    seen = first.get(ALICE, REF)
    assert (seen.version, dict(seen.channels)) == (6, {"latest": 2, "stable": 1})


class ContendedLog(SqliteEventLog):
    """A log where another writer gets in first, `conflicts` times (None: always)."""

    conflicts: int | None = 0

    def append(
        self, stream_id: str, expected_version: int, events: Sequence[Event], meta: Metadata
    ) -> AppendResult:
        if self.conflicts is None or self.conflicts > 0:
            if self.conflicts is not None:
                self.conflicts -= 1
            raise VersionConflict(f"{stream_id} moved on")
        return super().append(stream_id, expected_version, events, meta)


def _contended(tmp_path: Path, model_files: dict) -> tuple[Registry, ContendedLog]:
    log = ContendedLog(tmp_path / "log.db")
    reg = Registry(log, LocalBlobStore(tmp_path / "blobs", TEST_KEK))
    reg.register_base(ADMIN, "tiny", model_files["fingerprint"], model_files["shapes"], "b1")
    reg.create_adapter(ALICE, REF, model_files["fingerprint"], "c1")
    return reg, log


def test_a_command_without_expected_version_is_decided_again_after_conflicts(
    tmp_path: Path, model_files: dict
) -> None:
    reg, log = _contended(tmp_path, model_files)
    log.conflicts = 8  # more than a fixed count of tries would survive
    out = reg.set_gate(ALICE, REF, "stable", "suite", rid())
    assert out.result.last_version == 2 and log.conflicts == 0


def test_conflicts_that_never_end_are_unavailable_within_the_callers_deadline(
    tmp_path: Path, model_files: dict
) -> None:
    reg, log = _contended(tmp_path, model_files)
    log.conflicts = None
    started = time.monotonic()
    with caller_deadline(1.5), pytest.raises(Unavailable, match="same request id"):
        reg.set_gate(ALICE, REF, "stable", "suite", rid())
    assert time.monotonic() - started < 1.5
    assert events(reg) == 2  # the base and the adapter: nothing appended
