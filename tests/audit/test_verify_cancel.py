"""A verify that fails stops reading: the reads still queued are cancelled, so the error
reaches the auditor after the reads in progress, not after every read asked for."""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

import pytest

from mint.audit import verify
from mint.backends.local_blobs import LocalBlobStore
from mint.backends.sqlite_log import SqliteEventLog
from mint.domain.errors import Unavailable
from mint.domain.names import AdapterRef
from mint.registry import Principal, Registry
from tests.keys import TEST_KEK

OPS = Principal("ops", frozenset({"*"}), admin=True)
ALICE = Principal("alice", frozenset({"acme"}))
ADAPTERS = 24  # a blob each; read 2 at a time, with up to 8 asked for


class _FailingBlobs(LocalBlobStore):
    """Every read is slow, and the first fails as an unreachable store does."""

    def __init__(self, root: Path) -> None:
        super().__init__(root, TEST_KEK)
        self.reads = 0
        self._lock = threading.Lock()

    def get(self, adapter_id: str, sha256: str) -> bytes:
        with self._lock:
            self.reads += 1
            first = self.reads == 1
        time.sleep(0.3)
        if first:
            raise Unavailable("the blob store is unreachable")
        return super().get(adapter_id, sha256)


def test_a_failed_read_cancels_the_reads_still_queued(tmp_path: Path, model_files: dict) -> None:
    log = SqliteEventLog(tmp_path / "log.db")
    registry = Registry(log, LocalBlobStore(tmp_path / "blobs", TEST_KEK))
    registry.register_base(
        OPS, "tiny", model_files["fingerprint"], model_files["shapes"], uuid.uuid4().hex
    )
    for a in range(ADAPTERS):
        ref = AdapterRef("acme", f"a{a}")
        registry.create_adapter(ALICE, ref, model_files["fingerprint"], uuid.uuid4().hex)
        registry.publish_revision(ALICE, ref, model_files["upload"], uuid.uuid4().hex)
    blobs = _FailingBlobs(tmp_path / "blobs")

    started = time.monotonic()
    with pytest.raises(Unavailable, match="unreachable"):
        verify.verify(log.read_all(), blobs, reads=2)
    assert blobs.reads <= 4  # the failed one, and those running beside it or next
    assert time.monotonic() - started < 1.0  # the 8 asked for, 2 at a time: 1.2 s
