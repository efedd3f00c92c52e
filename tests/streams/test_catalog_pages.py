"""Pages of the projection's catalog in the real S3 cost what the page holds, not what
the catalog holds: S3 requests counted through the reader, for a tenant of 10 adapters
beside one of 200."""

from __future__ import annotations

import io
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from minio import Minio

from mint.backends.local_blobs import LocalBlobStore
from mint.backends.s3_objects import S3Objects
from mint.backends.sqlite_log import SqliteEventLog
from mint.catalog.port import walk
from mint.catalog.projection import SCAN_PAGES, ProjectionCatalog
from mint.domain.errors import DataLoss
from mint.domain.names import AdapterRef
from mint.projection import Planner
from mint.registry import Principal, Registry
from streams.projector.sink import S3Sink
from tests.keys import TEST_KEK

OPS = Principal("ops", frozenset({"*"}), admin=True)
BASE = "b" * 64
SMALL, BIG = 10, 200
RARE_EVERY = 50  # in the big tenant, one adapter in 50 carries {"rare": "yes"}


class CountedObjects(S3Objects):
    """The real S3, counting what the catalog asks of it."""

    def __init__(self, s3: Minio, bucket: str) -> None:
        super().__init__(s3, bucket, "p/")
        self._lock = threading.Lock()  # entries are read on several threads
        self.reset()

    def reset(self) -> None:
        self.gets = self.listings = self.keys_listed = 0
        self.asked: list[int] = []  # each listing's limit

    def get(self, key: str) -> bytes | None:
        with self._lock:
            self.gets += 1
        return super().get(key)

    def keys_after(self, prefix: str, start_after: str, limit: int) -> list[str]:
        keys = super().keys_after(prefix, start_after, limit)
        self.listings, self.keys_listed = self.listings + 1, self.keys_listed + len(keys)
        self.asked.append(limit)
        return keys


@pytest.fixture(scope="module")
def bucket(s3: Minio, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A projection with tenants `small` and `big`, written by the projector's planner
    and sink from a registry's log."""
    name = f"cat-{uuid.uuid4().hex[:10]}"
    folder: Path = tmp_path_factory.mktemp("catalog")
    log = SqliteEventLog(folder / "events.db")
    registry = Registry(log, LocalBlobStore(folder / "blobs", TEST_KEK))
    registry.register_base(OPS, "tiny", BASE, {"w": (1, 1)}, uuid.uuid4().hex)
    for i in range(SMALL):
        registry.create_adapter(OPS, AdapterRef("small", f"s{i:03d}"), BASE, uuid.uuid4().hex)
    for i in range(BIG):
        labels = {"rare": "yes"} if i % RARE_EVERY == RARE_EVERY - 1 else {}
        ref = AdapterRef("big", f"b{i:03d}")
        registry.create_adapter(OPS, ref, BASE, uuid.uuid4().hex, labels=labels)
    planner, sink = Planner(), S3Sink(s3, name, blobs_bucket=name, prefix="p/", kek=TEST_KEK)
    writes = [planner.plan(r) for r in log.read_all()]
    with ThreadPoolExecutor(8) as pool:  # one catalog entry per adapter: any order
        list(pool.map(sink.apply, writes))
    log.close()
    return name


@pytest.fixture
def objects(s3: Minio, bucket: str) -> CountedObjects:
    return CountedObjects(s3, bucket)


@pytest.fixture
def catalog(objects: CountedObjects) -> Iterator[ProjectionCatalog]:
    catalog = ProjectionCatalog(objects)
    yield catalog
    catalog.close()


def test_a_page_reads_what_it_returns_whatever_the_tenants_size(
    catalog: ProjectionCatalog, objects: CountedObjects
) -> None:
    costs = {}
    for tenant in ("small", "big"):
        objects.reset()
        page = catalog.page(tenant, None, {}, 5)
        assert len(page.adapters) == 5 and page.next_after is not None
        costs[tenant] = (objects.gets, objects.listings, objects.asked)
        objects.reset()
        later = catalog.page(tenant, page.next_after, {}, 5)  # a page further on, the same
        assert later.adapters[0].name > page.adapters[-1].name
        assert (objects.gets, objects.listings, objects.asked) == costs[tenant]
    assert costs["small"] == costs["big"] == (5, 1, [6])  # 5 entries, and one more key


def test_a_walk_reads_each_entry_once(catalog: ProjectionCatalog, objects: CountedObjects) -> None:
    pages = list(walk(catalog, "big", {}, 30))
    assert [a.name for p in pages for a in p.adapters] == [f"b{i:03d}" for i in range(BIG)]
    assert objects.gets == BIG
    assert objects.keys_listed <= BIG + len(pages)  # each key once, and one look ahead


def test_a_filtered_page_bounds_its_work_and_says_where_to_go_on(
    catalog: ProjectionCatalog, objects: CountedObjects
) -> None:
    rare = [f"b{i:03d}" for i in range(RARE_EVERY - 1, BIG, RARE_EVERY)]
    found: list[str] = []
    after: str | None = None
    while True:
        objects.reset()
        page = catalog.page("big", after, {"rare": "yes"}, 5)
        assert objects.gets <= 5 * SCAN_PAGES and objects.listings <= SCAN_PAGES
        found += [a.name for a in page.adapters]
        if page.next_after is None:
            break
        assert page.next_after > (after or "")  # the cursor always moves on
        after = page.next_after
    assert found == rare
    short = catalog.page("big", None, {"rare": "yes"}, 5)  # 20 entries read, 0 matched
    assert short.adapters == [] and short.next_after == f"b{5 * SCAN_PAGES - 1:03d}"


def test_an_unreadable_entry_is_data_loss_that_says_to_rebuild(s3: Minio, unique: str) -> None:
    s3.make_bucket(unique)
    s3.put_object(unique, "catalog/acme/broken.json", io.BytesIO(b"{not json"), 9)
    catalog = ProjectionCatalog(S3Objects(s3, unique))
    with pytest.raises(DataLoss, match=r"catalog/acme/broken.json is unreadable.*rebuild"):
        catalog.page("acme", None, {}, 10)
    catalog.close()


def test_before_anything_is_projected_the_list_is_empty(s3: Minio, unique: str) -> None:
    catalog = ProjectionCatalog(S3Objects(s3, unique))  # no bucket yet
    page = catalog.page("acme", None, {}, 10)
    assert (page.adapters, page.next_after) == ([], None)
    catalog.close()
