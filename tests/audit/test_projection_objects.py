"""`verify` given the projection checks every object the log writes there, not only the
revision files: channel pointers, `current.json`, manifests, evaluations, catalog entries
and base descriptions, each against what the projector's own planner makes of the log
(real Kafka and S3, the projection written by the projector's rebuild). A pointer moved to
another revision, a deleted manifest or catalog entry, an altered `current.json`, and an
object no event writes are each named by key; the command exits 1."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from minio import Minio

from mint.audit import verify
from mint.backends.kafka import KafkaConnection
from mint.backends.kafka_log import KafkaEventLog
from mint.backends.s3_blobs import S3BlobStore
from mint.backends.s3_objects import S3Objects
from mint.domain.names import AdapterRef
from mint.eventlog.port import Position, Recorded
from mint.layout import ADAPTER_CONFIG, ADAPTER_WEIGHTS
from mint.models.base import build_base, tiny_llama_config
from mint.models.lora import attach_lora
from mint.registry import Principal, Registry, Upload
from mint.v1.events_pb2 import EventEnvelope
from streams.projector.runner import rebuild
from streams.projector.sink import S3Sink
from tests.keys import TEST_KEK, kek_file

OPS = Principal("ops", frozenset({"*"}), admin=True)
ALICE = Principal("alice", frozenset({"acme"}))
TONE, OTHER, GONE = (
    AdapterRef("acme", "tone"),
    AdapterRef("acme", "other"),
    AdapterRef("acme", "gone"),
)
PREFIX = "p/"
TONE_KEYS = "adapters/acme/tone/"
# What the log below writes besides revision files: the base's description; three catalog
# entries (the erased adapter's stays); tone's two manifests, its evaluations of revision
# 1, its latest and stable pointers and current.json (gone's objects were deleted).
OBJECTS = 1 + 3 + 2 + 1 + 2 + 1


def rid() -> str:
    return uuid.uuid4().hex


@pytest.fixture(scope="module")
def logged(
    kafka: KafkaConnection, s3: Minio, model_files: dict, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict]:
    """acme/tone with two revisions (other weights each), an evaluation, stable on 1 and
    latest on 2; acme/other with none; acme/gone published, then erased."""
    folder = tmp_path_factory.mktemp("second")
    attach_lora(build_base(tiny_llama_config(), seed=0), rank=4, seed=2).save_pretrained(
        str(folder)
    )
    second = Upload((folder / ADAPTER_CONFIG).read_bytes(), (folder / ADAPTER_WEIGHTS).read_bytes())
    topic = f"projaudit-{uuid.uuid4().hex[:8]}"
    log = KafkaEventLog(kafka, topic, partitions=2, txn_prefix=topic)
    registry = Registry(log, S3BlobStore(s3, topic, TEST_KEK))
    fp = model_files["fingerprint"]
    registry.register_base(OPS, "tiny", fp, model_files["shapes"], rid())
    registry.create_adapter(ALICE, TONE, fp, rid())
    registry.publish_revision(ALICE, TONE, model_files["upload"], rid())
    registry.record_evaluation(ALICE, TONE, 1, "safety", {"acc": 0.9}, True, rid())
    registry.move_channel(ALICE, TONE, "stable", 1, rid(), reason="promote")
    registry.publish_revision(ALICE, TONE, second, rid(), parents=(1,))
    registry.create_adapter(ALICE, OTHER, fp, rid())
    registry.create_adapter(ALICE, GONE, fp, rid())
    registry.publish_revision(ALICE, GONE, model_files["upload"], rid())
    registry.erase(ALICE, GONE, rid())
    yield {"topic": topic, "log": log, "s3": s3}
    log.close()


@pytest.fixture
def projected(logged: dict, unique: str) -> dict:
    """A projection of its own (tests damage it), written by the projector's rebuild."""
    s3, topic = logged["s3"], logged["topic"]
    rebuild(logged["log"], S3Sink(s3, unique, blobs_bucket=topic, prefix=PREFIX, kek=TEST_KEK))
    return {**logged, "bucket": unique, "projection": S3Objects(s3, unique, PREFIX)}


def _verify(p: dict) -> verify.Report:
    blobs = S3BlobStore(p["s3"], p["topic"], TEST_KEK)
    return verify.verify(p["log"].read_all(), blobs, p["projection"])


def _texts(report: verify.Report) -> list[str]:
    return [str(problem) for problem in report.problems]


def _get(p: dict, key: str) -> bytes:
    return bytes(p["s3"].get_object(p["bucket"], PREFIX + key).read())


def _put(p: dict, key: str, body: bytes) -> None:
    p["s3"].put_object(p["bucket"], PREFIX + key, io.BytesIO(body), len(body))


def _delete(p: dict, key: str) -> None:
    p["s3"].remove_object(p["bucket"], PREFIX + key)


def _retarget(p: dict, key: str, revision: int) -> None:
    """Point the pointer at `key` to another revision, consistently: as that revision's
    own pointer would read (its manifest, its weights' sha256)."""
    doc = json.loads(_get(p, key))
    manifest = json.loads(_get(p, f"{TONE_KEYS}revisions/{revision}/manifest.json"))
    doc["revision"] = revision
    doc["manifest"] = f"{TONE_KEYS}revisions/{revision}/manifest.json"
    doc["weights_sha256"] = manifest["files"][ADAPTER_WEIGHTS]["sha256"]
    _put(p, key, (json.dumps(doc, sort_keys=True, indent=2) + "\n").encode())


def test_a_rebuilt_projection_verifies_clean(projected: dict) -> None:
    report = _verify(projected)
    assert report.clean, report.problems
    assert report.projection_files_checked == 6  # weights and config of 3 revisions
    assert report.projection_objects_checked == OBJECTS
    assert len(report.erasures) == 1  # gone's objects are not expected, its entry is


def _stable_to_2(p: dict) -> None:
    _retarget(p, f"{TONE_KEYS}channels/stable.json", 2)


def _current_to_2(p: dict) -> None:
    _retarget(p, f"{TONE_KEYS}current.json", 2)


def _current_altered(p: dict) -> None:
    key = f"{TONE_KEYS}current.json"
    _put(p, key, _get(p, key).replace(b'"channel": "stable"', b'"channel": "canary"'))


def _evaluation_altered(p: dict) -> None:
    key = f"{TONE_KEYS}revisions/1/evaluations.json"
    _put(p, key, _get(p, key).replace(b'"passed": true', b'"passed": false'))


def _base_deleted(p: dict) -> None:
    [base] = p["s3"].list_objects(p["bucket"], PREFIX + "bases/")
    p["s3"].remove_object(p["bucket"], base.object_name)


TAMPERINGS: dict[str, tuple[Callable[[dict], None], str]] = {
    "pointer moved": (
        _stable_to_2,
        f"acme/tone: projection's {TONE_KEYS}channels/stable.json points at revision 2, "
        "the log at revision 1",
    ),
    "manifest deleted": (
        lambda p: _delete(p, f"{TONE_KEYS}revisions/1/manifest.json"),
        f"acme/tone: projection has no {TONE_KEYS}revisions/1/manifest.json",
    ),
    "catalog entry deleted": (
        lambda p: _delete(p, "catalog/acme/other.json"),
        "acme/other: projection has no catalog/acme/other.json",
    ),
    "erased adapter's catalog entry deleted": (
        lambda p: _delete(p, "catalog/acme/gone.json"),
        "acme/gone: projection has no catalog/acme/gone.json",
    ),
    "current moved": (
        _current_to_2,
        f"acme/tone: projection's {TONE_KEYS}current.json points at revision 2, the log at "
        "revision 1",
    ),
    "current altered": (
        _current_altered,
        f"acme/tone: projection's {TONE_KEYS}current.json differs from what the log writes there",
    ),
    "evaluation altered": (
        _evaluation_altered,
        f"acme/tone: projection's {TONE_KEYS}revisions/1/evaluations.json differs from what "
        "the log writes there",
    ),
    "base description deleted": (_base_deleted, ": projection has no bases/"),
    "pointer of a channel never set": (
        lambda p: _put(
            p,
            f"{TONE_KEYS}channels/canary.json",
            _get(p, f"{TONE_KEYS}channels/latest.json").replace(b'"latest"', b'"canary"'),
        ),
        f"acme/tone: projection holds {TONE_KEYS}channels/canary.json, which no event writes",
    ),
    "catalog entry of an adapter never created": (
        lambda p: _put(
            p,
            "catalog/acme/ghost.json",
            _get(p, "catalog/acme/other.json").replace(b"other", b"ghost"),
        ),
        "acme/ghost: projection holds catalog/acme/ghost.json, which no event writes",
    ),
    "erased adapter's folder written again": (
        lambda p: _put(
            p,
            "adapters/acme/gone/channels/latest.json",
            _get(p, f"{TONE_KEYS}channels/latest.json"),
        ),
        "acme/gone: projection holds adapters/acme/gone/channels/latest.json, which no event "
        "writes",
    ),
}


@pytest.mark.parametrize("tampering", TAMPERINGS)
def test_each_damaged_object_is_named_by_its_key(projected: dict, tampering: str) -> None:
    damage, expected = TAMPERINGS[tampering]
    damage(projected)
    texts = _texts(_verify(projected))
    assert len(texts) == 1, texts
    assert expected in texts[0], texts


def test_a_pointer_claiming_a_later_version_is_named_as_one_a_rebuild_keeps(
    projected: dict,
) -> None:
    """The sink never replaces an object reflecting a later stream version, so a forged
    pointer claiming one outlives rebuilds: verify says so rather than 'a rebuild repairs
    it'."""
    key = f"{TONE_KEYS}channels/stable.json"
    _retarget(projected, key, 2)
    doc = json.loads(_get(projected, key))
    doc["stream_version"] = 999
    _put(projected, key, json.dumps(doc).encode())
    [text] = _texts(_verify(projected))
    assert f"{key} points at revision 2, the log at revision 1" in text
    assert "stream version 999" in text and "never replaces" in text
    assert "a rebuild into the projection repairs it" not in text


def test_an_event_the_projector_cannot_plan_is_named(projected: dict) -> None:
    """An event of a type this version does not know that chains on its stream stops the
    live projector (a newer registry's: only a newer projector may plan it): verify says
    so at its position, besides the chain's complaint about its hash."""
    records = list(projected["log"].read_all())
    head = [r for r in records if r.envelope.stream_id == "acme/tone"][-1].envelope
    envelope = EventEnvelope()
    envelope.CopyFrom(head)
    envelope.event_type, envelope.stream_version = "mint.v1.Bogus", head.stream_version + 1
    envelope.prev_hash = head.hash
    forged = Recorded(envelope, Position(0, 10**6))
    blobs = S3BlobStore(projected["s3"], projected["topic"], TEST_KEK)
    report = verify.verify([*records, forged], blobs, projected["projection"])
    named = [p for p in report.problems if p.position == str(forged.position)]
    assert any(
        "the projector cannot plan this event (InvalidArgument: unknown event type "
        "'mint.v1.Bogus')" in p.problem
        for p in named
    ), report.problems
    assert all(p.position == str(forged.position) for p in report.problems), report.problems


def test_a_rebuild_repairs_what_verify_names(projected: dict) -> None:
    _stable_to_2(projected)
    _delete(projected, "catalog/acme/other.json")
    assert len(_verify(projected).problems) == 2
    s3, topic = projected["s3"], projected["topic"]
    sink = S3Sink(s3, projected["bucket"], blobs_bucket=topic, prefix=PREFIX, kek=TEST_KEK)
    rebuild(projected["log"], sink)
    assert _verify(projected).clean


def test_every_object_is_read_once(projected: dict) -> None:
    """Revision files are read by their own check, the other objects once each."""

    class Counting(S3Objects):
        def __init__(self) -> None:
            super().__init__(projected["s3"], projected["bucket"], PREFIX)
            self.reads: list[str] = []

        def get(self, key: str) -> bytes | None:
            self.reads.append(key)
            return super().get(key)

    counting = Counting()
    report = _verify({**projected, "projection": counting})
    assert report.clean, report.problems
    assert len(counting.reads) == len(set(counting.reads)) == 6 + OBJECTS


def test_the_command_names_each_damaged_object_and_exits_1(
    projected: dict, endpoints: dict[str, str], tmp_path: Path
) -> None:
    topic = projected["topic"]
    options = ["--events-topic", topic, "--events-partitions", "2", "--blobs-bucket", topic]
    options += ["--kek-file", str(kek_file(tmp_path))]
    options += ["--projection-bucket", projected["bucket"], "--projection-prefix", PREFIX]

    def audit() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "mint.audit", "verify", *options],
            capture_output=True,
            text=True,
            env={**os.environ, **endpoints},
            timeout=120,
        )

    clean = audit()
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert f"6 projection files, {OBJECTS} other projection objects checked" in clean.stdout
    assert clean.stdout.rstrip().endswith(": clean"), clean.stdout
    assert f"6 projection files, {OBJECTS} other projection objects" in clean.stderr  # progress

    for tampering in (
        "pointer moved",
        "manifest deleted",
        "catalog entry deleted",
        "current altered",
    ):
        TAMPERINGS[tampering][0](projected)
    result = audit()
    assert result.returncode == 1, result.stdout + result.stderr
    lines = [line for line in result.stdout.splitlines() if line.startswith("PROBLEM ")]
    assert len(lines) == 4, result.stdout
    for key in (
        f"{TONE_KEYS}channels/stable.json points at revision 2, the log at revision 1",
        f"projection has no {TONE_KEYS}revisions/1/manifest.json",
        "projection has no catalog/acme/other.json",
        f"{TONE_KEYS}current.json differs",
    ):
        assert any(key in line for line in lines), (key, result.stdout)
    assert "4 problems" in result.stdout
