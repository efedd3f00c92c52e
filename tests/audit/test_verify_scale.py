"""`verify` at scale, against the real Kafka and S3: each distinct blob is read once per
run however many revisions share it, and progress is reported as it goes (from the API,
on a terminal, and as plain lines from the command line)."""

from __future__ import annotations

import io
import os
import random
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from minio import Minio

from mint.audit import progress, verify
from mint.backends.kafka import KafkaConnection
from mint.backends.kafka_log import KafkaEventLog
from mint.backends.s3_blobs import S3BlobStore
from mint.domain.errors import NotFound
from mint.domain.events import AdapterCreated
from mint.domain.names import AdapterRef
from mint.layout import ADAPTER_CONFIG, ADAPTER_WEIGHTS
from mint.models.base import build_base, tiny_llama_config
from mint.models.lora import attach_lora
from mint.registry import Principal, Registry, Upload
from tests.keys import TEST_KEK, kek_file

OPS = Principal("ops", frozenset({"*"}), admin=True)
ALICE = Principal("alice", frozenset({"acme"}))
ADAPTERS, REVISIONS = 4, 5  # 20 revisions over 2 distinct blobs per adapter


def rid() -> str:
    return uuid.uuid4().hex


@pytest.fixture(scope="module")
def shared_blobs(
    kafka: KafkaConnection, s3: Minio, model_files: dict, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict]:
    """A log whose revisions all reference one of two blobs."""
    folder = tmp_path_factory.mktemp("second")
    attach_lora(build_base(tiny_llama_config(), seed=0), rank=4, seed=2).save_pretrained(
        str(folder)
    )
    uploads = [
        model_files["upload"],
        Upload((folder / ADAPTER_CONFIG).read_bytes(), (folder / ADAPTER_WEIGHTS).read_bytes()),
    ]
    topic = f"verify-{uuid.uuid4().hex[:8]}"
    log = KafkaEventLog(kafka, topic, partitions=2, txn_prefix=topic)
    registry = Registry(log, S3BlobStore(s3, topic, TEST_KEK))
    registry.register_base(OPS, "tiny", model_files["fingerprint"], model_files["shapes"], rid())
    for a in range(ADAPTERS):
        ref = AdapterRef("acme", f"a{a}")
        registry.create_adapter(ALICE, ref, model_files["fingerprint"], rid())
        for r in range(REVISIONS):
            registry.publish_revision(ALICE, ref, uploads[r % 2], rid())
    yield {"topic": topic, "log": log}
    log.close()


class _CountingBlobs(S3BlobStore):
    def __init__(self, s3: Minio, bucket: str) -> None:
        super().__init__(s3, bucket, TEST_KEK)
        self.reads: list[tuple[str, str]] = []

    def get(self, adapter_id: str, sha256: str) -> bytes:
        self.reads.append((adapter_id, sha256))
        return super().get(adapter_id, sha256)


def test_each_distinct_blob_is_read_once(shared_blobs: dict, s3: Minio) -> None:
    blobs = _CountingBlobs(s3, shared_blobs["topic"])
    report = verify.verify(shared_blobs["log"].read_all(), blobs)
    assert report.clean, report.problems
    assert len(blobs.reads) == len(set(blobs.reads)) == 2 * ADAPTERS
    assert report.blobs_checked == 2 * ADAPTERS


class _SlowAndMissingBlobs(S3BlobStore):
    """Reads finish in a random order, and every second adapter's blobs are missing."""

    def __init__(self, s3: Minio, bucket: str) -> None:
        super().__init__(s3, bucket, TEST_KEK)
        self.missing: set[str] = set()
        self.rng = random.Random(7)

    def get(self, adapter_id: str, sha256: str) -> bytes:
        time.sleep(self.rng.uniform(0, 0.02))
        if adapter_id in self.missing:
            raise NotFound(f"no blob {sha256} of adapter {adapter_id}")
        return super().get(adapter_id, sha256)


def test_reads_at_a_time_find_what_reads_one_by_one_find(shared_blobs: dict, s3: Minio) -> None:
    blobs = _SlowAndMissingBlobs(s3, shared_blobs["topic"])
    created = [r.event for r in shared_blobs["log"].read_all()]
    ids = sorted({e.adapter_id for e in created if isinstance(e, AdapterCreated)})
    blobs.missing = set(ids[::2])
    one = verify.verify(shared_blobs["log"].read_all(), blobs, reads=1)
    many = verify.verify(shared_blobs["log"].read_all(), blobs, reads=8)
    assert len(one.problems) == len(blobs.missing) * REVISIONS  # each revision's, named
    assert many.problems == one.problems
    assert many.blobs_checked == one.blobs_checked == 2 * ADAPTERS


def test_a_memo_too_small_for_every_blob_reads_again_and_stays_right(
    shared_blobs: dict, s3: Minio, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The memo is bounded: with room for one verdict, an adapter's two blobs evict each
    other (read one at a time, each judged before the next is asked for: a read still in
    flight is shared, which would hide the evictions)."""
    monkeypatch.setattr(verify, "IN_FLIGHT_PER_READER", 0)
    blobs = _CountingBlobs(s3, shared_blobs["topic"])
    report = verify.verify(shared_blobs["log"].read_all(), blobs, blob_memo=1)
    assert report.clean, report.problems
    assert len(set(blobs.reads)) == 2 * ADAPTERS < len(blobs.reads) <= ADAPTERS * REVISIONS


def test_progress_is_reported_as_it_goes(
    shared_blobs: dict, s3: Minio, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(verify, "PROGRESS_EVERY", 5)
    seen: list[verify.Progress] = []
    report = verify.verify(
        shared_blobs["log"].read_all(),
        S3BlobStore(s3, shared_blobs["topic"], TEST_KEK),
        progress=seen.append,
    )
    assert len(seen) > report.events // 5 > 1
    assert [p.events for p in seen] == sorted(p.events for p in seen)
    last = seen[-1]
    assert (last.events, last.streams, last.blobs_checked) == (
        report.events,
        report.streams,
        report.blobs_checked,
    )


def test_progress_shown_on_a_terminal_and_as_plain_lines() -> None:
    done = verify.Progress(events=1200, streams=300, blobs_checked=2, projection_files_checked=0)
    terminal = io.StringIO()
    with progress.shown(terminal, terminal=True) as show:
        show(done)
    assert "1,200 events read" in terminal.getvalue() and "\x1b[" in terminal.getvalue()

    plain = io.StringIO()
    with progress.shown(plain, terminal=False) as show:
        show(done)
    lines = plain.getvalue().splitlines()
    assert len(lines) == 1 and "verified: 1,200 events read (" in lines[0]
    assert lines[0].endswith("300 streams, 2 blobs checked") and "\x1b[" not in lines[0]


def test_the_command_line_reports_progress_on_stderr(
    shared_blobs: dict, endpoints: dict[str, str], tmp_path: Path
) -> None:
    topic = shared_blobs["topic"]
    options = ["--events-topic", topic, "--events-partitions", "2", "--blobs-bucket", topic]
    options += ["--kek-file", str(kek_file(tmp_path))]
    result = subprocess.run(
        [sys.executable, "-m", "mint.audit", "verify", *options],
        capture_output=True,
        text=True,
        env={**os.environ, **endpoints},
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    events = 1 + ADAPTERS * (1 + 2 * REVISIONS)  # base; created, published + latest moved
    assert f"verified: {events} events read" in result.stderr
    assert f"{ADAPTERS + 1} streams, {2 * ADAPTERS} blobs checked" in result.stderr
    assert f"{2 * ADAPTERS} blobs checked, 0 erasures: clean" in result.stdout
