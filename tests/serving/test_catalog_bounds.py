"""The catalog's caches are bounded: manifests by count (least recently used go first),
channel pointers by count and by age. Pure: the projection is a dict here (the catalog's
reads of the real S3 projection are in test_router.py and test_node.py)."""

from __future__ import annotations

import json

from mint.domain.names import AdapterRef
from mint.layout import ADAPTER_WEIGHTS, MANIFEST
from mint.serving.catalog import Catalog, revision_key
from mint.serving.requests import Selector


class Projection:
    """Objects by key, counting the reads."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self.reads = 0

    def get(self, key: str) -> bytes | None:
        self.reads += 1
        return self.objects.get(key)

    def put(self, key: str, value: object) -> None:
        self.objects[key] = json.dumps(value).encode()

    def revision(self, adapter: str, revision: int) -> None:
        manifest = {
            "adapter_id": f"id-{adapter}",
            "files": {ADAPTER_WEIGHTS: {"sha256": "ab" * 32, "size": 1000}},
            "base_fingerprint": "base",
            "config_json": "{}",
        }
        self.put(revision_key(adapter, revision, MANIFEST), manifest)


def test_manifests_are_cached_up_to_a_bound_least_recently_used_first() -> None:
    projection = Projection()
    for i in range(100):
        projection.revision(f"acme/a{i}", 1)
    catalog = Catalog(projection, manifests_cached=10)
    for i in range(100):
        catalog.revision(f"acme/a{i}", 1)
    assert len(catalog._manifests) == 10
    reads = projection.reads
    catalog.revision("acme/a99", 1)  # recent: cached
    assert projection.reads == reads
    catalog.revision("acme/a0", 1)  # long gone from the cache: read again
    assert projection.reads == reads + 1


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_channel_pointers_are_cached_for_their_ttl_and_up_to_a_bound() -> None:
    projection, clock = Projection(), Clock()
    for i in range(50):
        projection.revision(f"acme/a{i}", 1)
        projection.revision(f"acme/a{i}", 2)
        projection.put(f"adapters/acme/a{i}/channels/stable.json", {"revision": 1})
    catalog = Catalog(projection, pointer_ttl_s=1.0, pointers_cached=20, clock=clock)
    stable = Selector(AdapterRef.parse("acme/a0"), channel="stable")
    assert catalog.resolve(stable).revision == 1
    projection.put("adapters/acme/a0/channels/stable.json", {"revision": 2})  # promoted
    clock.now = 0.5
    assert catalog.resolve(stable).revision == 1, "within the TTL: the cached pointer"
    clock.now = 1.5
    assert catalog.resolve(stable).revision == 2, "past the TTL: read again"
    for i in range(50):
        catalog.resolve(Selector(AdapterRef.parse(f"acme/a{i}"), channel="stable"))
    assert len(catalog._pointers) == 20
