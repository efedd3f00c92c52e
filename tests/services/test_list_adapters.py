"""ListAdapters over gRPC, served from the projection: a registry on the real Kafka, the
live projector writing the catalog to the real S3, pages read back from there."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import grpc
import pytest
from minio import Minio

from mint.backends.kafka import KafkaConnection
from mint.backends.kafka_log import KafkaEventLog
from mint.backends.s3_blobs import S3BlobStore
from mint.backends.s3_objects import S3Objects
from mint.catalog.port import Page
from mint.catalog.projection import ProjectionCatalog
from mint.client import RegistryClient
from mint.registry import Registry
from mint.rpc.auth import TokenTable, token_digest
from services.registry.server import build_server
from streams.projector.runner import Projector
from streams.projector.sink import S3Sink
from tests.keys import TEST_KEK
from tests.services.conftest import TOKENS

BASE = "c" * 64


class RecordingCatalog(ProjectionCatalog):
    """The real catalog, remembering the page sizes it was asked for."""

    def __init__(self, objects: S3Objects) -> None:
        super().__init__(objects)
        self.limits: list[int] = []

    def page(self, tenant: str, after: str | None, labels: Mapping[str, str], limit: int) -> Page:
        self.limits.append(limit)
        return super().page(tenant, after, labels, limit)


@dataclass
class Listing:
    target: str
    catalog: RecordingCatalog
    projector: Projector

    def client(self, token: str) -> RegistryClient:
        return RegistryClient(self.target, token, retry_for_s=10)

    def project(self) -> None:
        """Run the projector until it has written everything in the log."""
        self.projector.run(stop_when_caught_up_s=0.5)


@pytest.fixture(scope="module")
def listing(kafka: KafkaConnection, s3: Minio) -> Iterator[Listing]:
    topic = f"list-{uuid.uuid4().hex[:10]}"
    log = KafkaEventLog(kafka, topic, partitions=3, txn_prefix=topic)
    catalog = RecordingCatalog(S3Objects(s3, topic, "projection/"))
    registry = Registry(log, S3BlobStore(s3, topic, TEST_KEK), catalog=catalog)
    tokens = TokenTable((token_digest(t), p) for t, p in TOKENS.items())
    server, port = build_server(registry, tokens)
    sink = S3Sink(s3, topic, blobs_bucket=topic, prefix="projection/", kek=TEST_KEK)
    projector = Projector(kafka, topic, sink, group_id=topic)
    admin = RegistryClient(f"127.0.0.1:{port}", "admin-token", retry_for_s=10)
    admin.register_base("tiny", BASE, {"w": (1, 1)})
    yield Listing(f"127.0.0.1:{port}", catalog, projector)
    projector.close()
    server.stop(grace=1).wait()
    catalog.close()
    log.close()


def test_the_list_is_what_the_projector_has_written(listing: Listing) -> None:
    alice = listing.client("alice-token")
    name = f"late-{uuid.uuid4().hex[:6]}"
    alice.create_adapter(f"acme/{name}", BASE)
    assert name not in [a.ref.name for a in alice.list_adapters("acme")]  # not projected yet
    listing.project()
    assert name in [a.ref.name for a in alice.list_adapters("acme")]


def test_pages_return_each_adapter_once_in_order_and_filter_by_labels(listing: Listing) -> None:
    alice, bob = listing.client("alice-token"), listing.client("bob-token")
    tag = uuid.uuid4().hex[:6]
    tone = {"kind": "tone", "run": tag}
    names = [f"p{i}-{tag}" for i in range(7)]
    for i, name in enumerate(names):
        alice.create_adapter(f"acme/{name}", BASE, labels=tone if i % 2 else {"run": tag})
    bob.create_adapter(f"other/p0-{tag}", BASE, labels=tone)
    listing.project()
    pages = [alice.list_page("acme", {"run": tag}, page_size=3)]
    while pages[-1].next_page_token:
        pages.append(alice.list_page("acme", {"run": tag}, 3, pages[-1].next_page_token))
    assert [[a.ref.name for a in p.adapters] for p in pages] == [names[:3], names[3:6], names[6:]]
    listed = list(alice.list_adapters("acme", tone, page_size=2))
    assert [a.ref.name for a in listed] == names[1::2]
    assert {(a.ref.tenant, a.base_fingerprint, a.labels["kind"]) for a in listed} == {
        ("acme", BASE, "tone")
    }


def test_page_size_defaults_to_100_and_is_capped_at_1000(listing: Listing) -> None:
    alice = listing.client("alice-token")
    listing.catalog.limits.clear()
    alice.list_page("acme", page_size=0)
    alice.list_page("acme", page_size=5000)
    assert listing.catalog.limits == [100, 1000]


def _token(doc: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(doc).encode()).decode()


@pytest.mark.parametrize(
    "token",
    [
        "!!",
        _token({"o": 100}),
        _token({"v": 3, "after": "a", "of": "x"}),
        _token({"v": 2, "after": "../x", "of": "x"}),
    ],
    ids=["not base64", "an offset token", "another version", "not a name"],
)
def test_a_malformed_token_says_to_start_without_one(listing: Listing, token: str) -> None:
    with pytest.raises(grpc.RpcError) as refused:
        listing.client("alice-token").list_page("acme", page_token=token)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "list again without a page_token" in str(refused.value.details())


def test_a_token_passed_with_another_listing_is_refused(listing: Listing) -> None:
    """Else it would skip the other listing's names up to the token's."""
    alice = listing.client("alice-token")
    token = alice.list_page("acme", page_size=1).next_page_token
    assert token
    alice.list_page("acme", page_token=token)  # its own listing goes on
    with pytest.raises(grpc.RpcError) as refused:
        alice.list_page("acme", {"run": "other"}, page_token=token)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "another tenant or other labels" in str(refused.value.details())


def test_a_token_of_the_release_before_goes_on_during_a_rolling_upgrade(
    listing: Listing,
) -> None:
    alice = listing.client("alice-token")
    first = alice.list_page("acme", page_size=2)
    last = first.adapters[-1].ref.name
    old = alice.list_page("acme", page_size=2, page_token=_token({"v": 1, "after": last}))
    new = alice.list_page("acme", page_size=2, page_token=first.next_page_token)
    assert [a.ref.name for a in old.adapters] == [a.ref.name for a in new.adapters]


def test_another_tenants_list_is_refused(listing: Listing) -> None:
    alice = listing.client("alice-token")
    for token in ("", "!!"):  # the tenant is checked before the token
        with pytest.raises(grpc.RpcError) as refused:
            alice.list_page("other", page_token=token)
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "may not act in tenant 'other'" in str(refused.value.details())
