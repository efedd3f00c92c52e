"""The BlobStore contract, once, against the local directory and the real S3 server."""

from __future__ import annotations

import hashlib
import io
import os
from abc import ABC, abstractmethod
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from minio import Minio

from deploy.local.stack import free_ports
from mint.backends.local_blobs import LocalBlobStore
from mint.backends.s3 import S3Settings, client
from mint.backends.s3_blobs import S3BlobStore
from mint.backends.s3_objects import S3Objects
from mint.blobs.port import BlobStore, blob_key
from mint.domain.errors import DataLoss, InvalidArgument, NotFound, Unavailable

DATA = os.urandom(100_000)
SHA = hashlib.sha256(DATA).hexdigest()


class BlobStoreContract(ABC):
    @abstractmethod
    def store(self) -> BlobStore: ...

    @abstractmethod
    def stored_keys(self) -> list[str]: ...

    @abstractmethod
    def overwrite(self, key: str, data: bytes) -> None:
        """Change stored bytes behind the store's back (tampering)."""

    def test_put_get_round_trip(self) -> None:
        ref = self.store().put(DATA)
        assert (ref.sha256, ref.size) == (SHA, len(DATA))
        assert self.store().get(SHA) == DATA
        assert self.store().exists(SHA)
        assert self.stored_keys() == [blob_key(SHA)]

    def test_same_content_is_stored_once(self) -> None:
        for _ in range(3):
            self.store().put(DATA, expected_sha256=SHA)
        assert self.stored_keys() == [blob_key(SHA)]

    def test_declared_sha256_mismatch_stores_nothing(self) -> None:
        with pytest.raises(InvalidArgument, match="upload it again"):
            self.store().put(DATA, expected_sha256="0" * 64)
        assert self.stored_keys() == []

    def test_missing_blob_is_not_found(self) -> None:
        assert not self.store().exists("1" * 64)
        with pytest.raises(NotFound):
            self.store().get("1" * 64)

    def test_hostile_digest_never_becomes_a_key(self) -> None:
        with pytest.raises(InvalidArgument):
            self.store().get("../../etc/passwd")

    def test_altered_blob_is_detected_on_read(self) -> None:
        self.store().put(DATA)
        self.overwrite(blob_key(SHA), DATA[:-1] + b"\x00")
        with pytest.raises(DataLoss, match=SHA):
            self.store().get(SHA)

    def test_stored_lists_blobs_and_delete_removes_one(self) -> None:
        before = datetime.now(UTC) - timedelta(minutes=5)  # clocks of S3 and here differ
        self.store().put(DATA)
        (listed,) = list(self.store().stored())
        assert (listed.sha256, listed.size) == (SHA, len(DATA))
        assert before < listed.modified < datetime.now(UTC) + timedelta(minutes=5)
        self.store().delete(SHA)
        self.store().delete(SHA)  # absent: nothing to do
        assert not self.store().exists(SHA) and list(self.store().stored()) == []

    def test_marks_are_set_listed_and_removed_apart_from_blobs(self) -> None:
        store = self.store()
        assert not store.marked(SHA)
        store.mark(SHA)
        store.mark(SHA)  # twice: still one mark
        assert store.marked(SHA) and list(store.marks()) == [SHA]
        assert list(store.stored()) == []  # a mark is not a blob
        store.unmark(SHA)
        store.unmark(SHA)
        assert not store.marked(SHA) and list(store.marks()) == []


class TestLocalBlobStore(BlobStoreContract):
    @pytest.fixture(autouse=True)
    def _root(self, tmp_path: Path) -> None:
        self.root = tmp_path

    def store(self) -> BlobStore:
        return LocalBlobStore(self.root)

    def stored_keys(self) -> list[str]:
        return sorted(str(p.relative_to(self.root)) for p in self.root.rglob("*") if p.is_file())

    def overwrite(self, key: str, data: bytes) -> None:
        (self.root / key).write_bytes(data)


class TestS3BlobStore(BlobStoreContract):
    @pytest.fixture(autouse=True)
    def _bucket(self, s3: Minio, unique: str) -> None:
        self.s3, self.bucket = s3, unique

    def store(self) -> BlobStore:
        return S3BlobStore(self.s3, self.bucket)

    def stored_keys(self) -> list[str]:
        self.store()  # creates the bucket on first use
        return sorted(str(o.object_name) for o in self.s3.list_objects(self.bucket, recursive=True))

    def overwrite(self, key: str, data: bytes) -> None:
        self.s3.put_object(self.bucket, key, io.BytesIO(data), len(data))


def test_unreachable_s3_is_unavailable_not_a_transport_error(
    s3: Minio, s3_settings: S3Settings, unique: str
) -> None:
    """The back end speaks for its own outages: callers (the gRPC layer) get the
    retryable domain error, never a urllib3 or minio type."""
    store = S3BlobStore(s3, unique)
    objects = S3Objects(s3, unique)
    nobody = S3Settings(f"127.0.0.1:{free_ports(1)[0]}", "mint", s3_settings.secret_key)
    store.s3 = objects.s3 = client(nobody, timeout_s=1, retries=0)  # nothing listens there
    for call in (lambda: store.put(DATA), lambda: store.get(SHA), lambda: store.exists(SHA)):
        with pytest.raises(Unavailable, match=r"object storage is unavailable.*retry"):
            call()
    with pytest.raises(Unavailable, match="retry"):
        objects.get("adapters/acme/tone/current.json")
    with pytest.raises(Unavailable, match="retry"):
        S3BlobStore(store.s3, unique)  # creating the bucket
