"""The AdapterCatalog contract, once, against the log scan (embedded back end) and the
projection's catalog in the real S3, written by the projector's own planner and sink."""

from __future__ import annotations

import random
import threading
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
from minio import Minio

from mint.backends.local_blobs import LocalBlobStore
from mint.backends.s3_objects import S3Objects
from mint.backends.sqlite_log import SqliteEventLog
from mint.catalog.log_scan import LogScanCatalog
from mint.catalog.port import AdapterCatalog, Page, order_key, walk
from mint.catalog.projection import ProjectionCatalog
from mint.domain.names import AdapterRef
from mint.eventlog.port import next_checkpoint
from mint.projection import Planner
from mint.registry import Principal, Registry
from streams.projector.sink import S3Sink
from tests.keys import TEST_KEK

OPS = Principal("ops", frozenset({"*"}), admin=True)
BASE = "b" * 64


def rid() -> str:
    return uuid.uuid4().hex


def names(pages: Iterator[Page] | list[Page]) -> list[str]:
    return [a.name for page in pages for a in page.adapters]


class AdapterCatalogContract(ABC):
    """Adapters are created through the registry over a SQLite log; `sync` makes them
    visible to the catalog under test."""

    @abstractmethod
    def make_catalog(self) -> AdapterCatalog: ...

    @pytest.fixture
    def backend(self) -> None:
        """What make_catalog needs, set up before it is called."""
        return None

    @abstractmethod
    def sync(self) -> None:
        """Bring the catalog up to the log (project what is new)."""

    @pytest.fixture(autouse=True)
    def _registry(self, tmp_path: Path, backend: None) -> Iterator[None]:
        self.log = SqliteEventLog(tmp_path / "events.db")
        self.registry = Registry(self.log, LocalBlobStore(tmp_path / "blobs", TEST_KEK))
        self.registry.register_base(OPS, "tiny", BASE, {"w": (1, 1)}, rid())
        self.catalog = self.make_catalog()
        yield
        self.catalog.close()
        self.log.close()

    def create(self, tenant: str, name: str, labels: Mapping[str, str] | None = None) -> None:
        self.registry.create_adapter(OPS, AdapterRef(tenant, name), BASE, rid(), labels=labels)

    def test_pages_hold_every_adapter_once_in_name_order(self) -> None:
        tricky = ["a", "a-b", "a.b", "a0", "a_b", "b"]  # where name and key order differ
        created = tricky + [f"n{i:02d}" for i in range(9)]
        for name in random.sample(created, len(created)):
            self.create("acme", name)
        self.create("acme-x", "a")  # a tenant whose name extends acme's
        self.sync()
        pages = list(walk(self.catalog, "acme", {}, 4))
        assert names(pages) == sorted(created, key=order_key)
        assert names(pages)[:6] == ["a-b", "a.b", "a", "a0", "a_b", "b"]
        assert [len(p.adapters) for p in pages] == [4, 4, 4, 3]
        assert {a.tenant for p in pages for a in p.adapters} == {"acme"}
        assert pages[-1].next_after is None
        assert names(walk(self.catalog, "acme-x", {}, 4)) == ["a"]
        assert names(walk(self.catalog, "nobody", {}, 4)) == []

    def test_a_page_carries_the_summary(self) -> None:
        self.create("acme", "tone", {"kind": "tone"})
        self.sync()
        (summary,) = self.catalog.page("acme", None, {}, 10).adapters
        created = self.registry.get(OPS, AdapterRef("acme", "tone")).created
        assert (summary.adapter_id, summary.tenant, summary.name) == (
            created.adapter_id,
            "acme",
            "tone",
        )
        assert (summary.base_fingerprint, dict(summary.labels)) == (BASE, {"kind": "tone"})

    def test_labels_filter_and_every_wanted_label_must_match(self) -> None:
        wanted = {"team": "a", "kind": "tone"}
        for i in range(12):
            labels = [wanted, {"team": "a"}, {"team": "b", "kind": "tone"}][i % 3]
            self.create("acme", f"n{i:02d}", {**labels, "i": str(i)})
        self.sync()
        assert names(walk(self.catalog, "acme", wanted, 2)) == ["n00", "n03", "n06", "n09"]
        assert names(walk(self.catalog, "acme", {"team": "b"}, 3)) == ["n02", "n05", "n08", "n11"]
        assert names(walk(self.catalog, "acme", {"team": "c"}, 3)) == []

    def test_archived_adapters_are_listed(self) -> None:
        self.create("acme", "kept")
        self.create("acme", "gone")
        self.registry.archive(OPS, AdapterRef("acme", "gone"), "done", rid())
        self.sync()
        assert names(walk(self.catalog, "acme", {}, 10)) == ["gone", "kept"]

    def test_a_walk_under_concurrent_writes_returns_each_earlier_adapter_once(self) -> None:
        earlier = [f"m{i:02d}" for i in range(24)]
        for name in earlier:
            self.create("acme", name)
        self.sync()
        writer = Writer(self, earlier)
        seen: list[str] = []
        try:
            for page in walk(self.catalog, "acme", {}, 3):
                seen += [a.name for a in page.adapters]
                writer.wait_for_one_more()  # the list changes between any two pages
        finally:
            writer.stop()
        assert writer.writes >= len(earlier) // 3
        assert sorted(n for n in seen if n in earlier) == earlier  # each exactly once
        assert len(seen) == len(set(seen))
        assert set(seen) - set(earlier) <= set(writer.created)
        assert seen == sorted(seen, key=order_key)


class Writer:
    """Meanwhile, on a thread: new adapters named before and after any cursor, and the
    earlier ones changed (archived), each write projected at once."""

    def __init__(self, contract: AdapterCatalogContract, earlier: list[str]) -> None:
        self.contract, self.earlier = contract, earlier
        self.most = 3 * len(earlier)  # so the walk ends: it outpaces what is added after it
        self.writes, self.created = 0, list[str]()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set() and self.writes < self.most:
            name = f"{random.choice('alz')}{uuid.uuid4().hex[:6]}"
            self.contract.create("acme", name)
            self.created.append(name)
            if self.writes < len(self.earlier):  # each earlier one archived once
                old = AdapterRef("acme", self.earlier[self.writes])
                self.contract.registry.archive(OPS, old, "meanwhile", rid())
            self.contract.sync()
            self.writes += 1

    def wait_for_one_more(self, timeout_s: float = 30.0) -> None:
        done, deadline = self.writes, time.monotonic() + timeout_s
        while self.writes == done and self.writes < self.most:
            assert time.monotonic() < deadline, "the writer made no progress"
            time.sleep(0.005)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=60)


class TestLogScanCatalog(AdapterCatalogContract):
    def make_catalog(self) -> AdapterCatalog:
        return LogScanCatalog(self.log)

    def sync(self) -> None:
        return None  # it reads the log itself


class TestProjectionCatalog(AdapterCatalogContract):
    @pytest.fixture
    def backend(self, s3: Minio, unique: str) -> None:
        self.s3, self.bucket = s3, unique
        self.sink = S3Sink(s3, unique, blobs_bucket=unique, prefix="p/", kek=TEST_KEK)
        self.planner, self.checkpoint = Planner(), dict[int, int]()
        self.sync_lock = threading.Lock()

    def make_catalog(self) -> AdapterCatalog:
        return ProjectionCatalog(S3Objects(self.s3, self.bucket, "p/"))

    def sync(self) -> None:
        with self.sync_lock:
            for recorded in self.log.read_all(self.checkpoint):
                self.sink.apply(self.planner.plan(recorded))
                self.checkpoint = next_checkpoint(self.checkpoint, recorded)
