"""The BlobStore contract, once, against the local directory and the real S3 server:
blobs sealed per adapter, and erasure by destroying the adapter's data key."""

from __future__ import annotations

import hashlib
import io
import os
import time
from abc import ABC, abstractmethod
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from minio import Minio

from deploy.local.stack import free_ports
from mint.backends.local_blobs import LocalBlobStore, local_kek
from mint.backends.s3 import S3Settings, client
from mint.backends.s3_blobs import S3BlobStore
from mint.backends.s3_objects import S3Objects
from mint.blobs.port import BlobId, BlobStore, blob_key, data_key_key
from mint.blobs.sealing import Kek
from mint.domain.errors import DataLoss, Erased, InvalidArgument, NotFound, Unavailable
from tests.keys import TEST_KEK

DATA = os.urandom(100_000)
SHA = hashlib.sha256(DATA).hexdigest()
ONE, OTHER = "1" * 32, "2" * 32  # adapter ids


class BlobStoreContract(ABC):
    @abstractmethod
    def store(self, kek: Kek = TEST_KEK) -> BlobStore: ...

    @abstractmethod
    def stored_keys(self) -> list[str]: ...

    @abstractmethod
    def read(self, key: str) -> bytes: ...

    @abstractmethod
    def overwrite(self, key: str, data: bytes) -> None:
        """Change stored bytes behind the store's back (tampering)."""

    def blob_keys(self) -> list[str]:
        return [k for k in self.stored_keys() if k.startswith("blobs/")]

    def test_put_get_round_trip(self) -> None:
        ref = self.store().put(ONE, DATA)
        assert (ref.sha256, ref.size) == (SHA, len(DATA))
        assert self.store().get(ONE, SHA) == DATA
        assert self.store().exists(ONE, SHA)
        assert self.stored_keys() == [blob_key(ONE, SHA), data_key_key(ONE)]

    def test_stored_bytes_are_sealed_not_the_content(self) -> None:
        self.store().put(ONE, DATA)
        stored = self.read(blob_key(ONE, SHA))
        assert DATA[:1000] not in stored and len(stored) > len(DATA)

    def test_same_content_is_stored_once_per_adapter(self) -> None:
        for _ in range(3):
            self.store().put(ONE, DATA, expected_sha256=SHA)
        assert self.blob_keys() == [blob_key(ONE, SHA)]

    def test_two_adapters_with_the_same_bytes_get_two_blobs_and_keys(self) -> None:
        self.store().put(ONE, DATA)
        self.store().put(OTHER, DATA)
        assert self.blob_keys() == sorted([blob_key(ONE, SHA), blob_key(OTHER, SHA)])
        assert self.read(data_key_key(ONE)) != self.read(data_key_key(OTHER))

    def test_declared_sha256_mismatch_stores_nothing(self) -> None:
        with pytest.raises(InvalidArgument, match="upload it again"):
            self.store().put(ONE, DATA, expected_sha256="0" * 64)
        assert self.stored_keys() == []

    def test_missing_blob_is_not_found(self) -> None:
        assert not self.store().exists(ONE, "1" * 64)
        with pytest.raises(NotFound):
            self.store().get(ONE, "1" * 64)

    def test_hostile_names_never_become_keys(self) -> None:
        with pytest.raises(InvalidArgument):
            self.store().get(ONE, "../../etc/passwd")
        with pytest.raises(InvalidArgument):
            self.store().get("../keys", SHA)

    def test_altered_blob_is_detected_on_read(self) -> None:
        self.store().put(ONE, DATA)
        sealed = self.read(blob_key(ONE, SHA))
        self.overwrite(blob_key(ONE, SHA), sealed[:-1] + bytes([sealed[-1] ^ 1]))
        with pytest.raises(DataLoss, match=SHA):
            self.store().get(ONE, SHA)

    def test_another_adapters_blob_put_in_place_does_not_open(self) -> None:
        self.store().put(ONE, DATA)
        self.store().put(OTHER, DATA)
        self.overwrite(blob_key(ONE, SHA), self.read(blob_key(OTHER, SHA)))
        with pytest.raises(DataLoss, match="does not open"):
            self.store().get(ONE, SHA)

    def test_another_kek_opens_nothing(self) -> None:
        self.store().put(ONE, DATA)
        with pytest.raises(DataLoss, match="key-encryption key"):
            self.store(Kek(os.urandom(32))).get(ONE, SHA)

    def test_erasure_leaves_nothing_that_opens_and_spares_the_other_adapter(self) -> None:
        self.store().put(ONE, DATA)
        self.store().put(OTHER, DATA)
        sealed = self.read(blob_key(ONE, SHA))  # a copy kept elsewhere (a backup)
        self.store().begin_erasure(ONE, "acme/tone")
        assert [p.adapter_id for p in self.store().pending_erasures()] == [ONE]
        self.store().erase(ONE)
        assert self.blob_keys() == [blob_key(OTHER, SHA)]
        assert self.store().pending_erasures() == []
        with pytest.raises(Erased, match="erased"):
            self.store().get(ONE, SHA)
        self.overwrite(blob_key(ONE, SHA), sealed)  # the backup restored: still shut
        with pytest.raises(Erased):
            self.store().get(ONE, SHA)
        with pytest.raises(Erased):  # no new key is made for an erased adapter
            self.store().put(ONE, DATA)
        assert self.store().get(OTHER, SHA) == DATA
        self.store().erase(ONE)  # again: idempotent, and what was restored goes again
        assert self.blob_keys() == [blob_key(OTHER, SHA)]

    def test_an_abandoned_erasure_is_forgotten_and_erases_nothing(self) -> None:
        self.store().put(ONE, DATA)
        began = time.time()
        self.store().begin_erasure(ONE, "acme/tone")
        [pending] = self.store().pending_erasures()
        assert (pending.stream, pending.began_at >= began - 1) == ("acme/tone", True)
        self.store().abandon_erasure(ONE)
        assert self.store().pending_erasures() == []
        assert self.store().get(ONE, SHA) == DATA

    def test_stored_lists_blobs_and_delete_removes_one(self) -> None:
        before = datetime.now(UTC) - timedelta(minutes=5)  # clocks of S3 and here differ
        self.store().put(ONE, DATA)
        (listed,) = list(self.store().stored())  # the data key is not a blob
        assert (listed.blob, listed.size > len(DATA)) == (BlobId(ONE, SHA), True)
        assert before < listed.modified < datetime.now(UTC) + timedelta(minutes=5)
        self.store().delete(ONE, SHA)
        self.store().delete(ONE, SHA)  # absent: nothing to do
        assert not self.store().exists(ONE, SHA) and list(self.store().stored()) == []

    def test_marks_are_per_adapter_set_listed_and_removed_apart_from_blobs(self) -> None:
        store = self.store()
        store.put(OTHER, DATA)
        assert not store.marked(ONE, SHA)
        store.mark(ONE, SHA)
        store.mark(ONE, SHA)  # twice: still one mark
        assert store.marked(ONE, SHA) and list(store.marks()) == [BlobId(ONE, SHA)]
        assert not store.marked(OTHER, SHA)  # the same bytes of another adapter
        assert [s.blob for s in store.stored()] == [BlobId(OTHER, SHA)]  # a mark is no blob
        store.unmark(ONE, SHA)
        store.unmark(ONE, SHA)
        assert not store.marked(ONE, SHA) and list(store.marks()) == []


class TestLocalBlobStore(BlobStoreContract):
    @pytest.fixture(autouse=True)
    def _root(self, tmp_path: Path) -> None:
        self.root = tmp_path

    def store(self, kek: Kek = TEST_KEK) -> BlobStore:
        return LocalBlobStore(self.root, kek)

    def stored_keys(self) -> list[str]:
        return sorted(str(p.relative_to(self.root)) for p in self.root.rglob("*") if p.is_file())

    def read(self, key: str) -> bytes:
        return (self.root / key).read_bytes()

    def overwrite(self, key: str, data: bytes) -> None:
        (self.root / key).parent.mkdir(parents=True, exist_ok=True)
        (self.root / key).write_bytes(data)


class TestS3BlobStore(BlobStoreContract):
    @pytest.fixture(autouse=True)
    def _bucket(self, s3: Minio, unique: str) -> None:
        self.s3, self.bucket = s3, unique

    def store(self, kek: Kek = TEST_KEK) -> BlobStore:
        return S3BlobStore(self.s3, self.bucket, kek)

    def stored_keys(self) -> list[str]:
        self.store()  # creates the bucket on first use
        return sorted(str(o.object_name) for o in self.s3.list_objects(self.bucket, recursive=True))

    def read(self, key: str) -> bytes:
        return bytes(self.s3.get_object(self.bucket, key).read())

    def overwrite(self, key: str, data: bytes) -> None:
        self.s3.put_object(self.bucket, key, io.BytesIO(data), len(data))


def test_the_embedded_kek_is_made_once_private_and_kept(tmp_path: Path) -> None:
    path = tmp_path / "kek"
    first = LocalBlobStore(tmp_path, local_kek(path))
    first.put(ONE, DATA)
    assert path.stat().st_mode & 0o777 == 0o600
    assert LocalBlobStore(tmp_path, local_kek(path)).get(ONE, SHA) == DATA


@pytest.mark.parametrize("form", ["hex", "base64", "raw"])
def test_a_kek_file_may_hold_hex_base64_or_raw_bytes(tmp_path: Path, form: str) -> None:
    key = bytes(range(32))
    text = {
        "hex": key.hex().encode() + b"\n",
        "base64": b"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
        "raw": key,
    }
    (tmp_path / "kek").write_bytes(text[form])
    wrapped = TEST_KEK.wrap(ONE, b"k" * 32)
    assert Kek.from_file(tmp_path / "kek").unwrap(ONE, wrapped) == b"k" * 32


def test_a_kek_file_of_another_length_is_refused(tmp_path: Path) -> None:
    (tmp_path / "kek").write_text("abcd\n")
    with pytest.raises(InvalidArgument, match="openssl rand -hex 32"):
        Kek.from_file(tmp_path / "kek")


def test_unreachable_s3_is_unavailable_not_a_transport_error(
    s3: Minio, s3_settings: S3Settings, unique: str
) -> None:
    """The back end speaks for its own outages: callers (the gRPC layer) get the
    retryable domain error, never a urllib3 or minio type."""
    store = S3BlobStore(s3, unique, TEST_KEK)
    objects = S3Objects(s3, unique)
    nobody = S3Settings(f"127.0.0.1:{free_ports(1)[0]}", "mint", s3_settings.secret_key)
    objects.s3 = client(nobody, timeout_s=1, retries=0)  # nothing listens there
    store.objects.s3 = objects.s3  # type: ignore[attr-defined]
    calls = (
        lambda: store.put(ONE, DATA),
        lambda: store.get(ONE, SHA),
        lambda: store.exists(ONE, SHA),
        lambda: store.erase(ONE),
        lambda: store.pending_erasures(),
    )
    for call in calls:
        with pytest.raises(Unavailable, match=r"object storage is unavailable.*retry"):
            call()
    with pytest.raises(Unavailable, match="retry"):
        objects.get("adapters/acme/tone/current.json")
    with pytest.raises(Unavailable, match="retry"):
        S3BlobStore(objects.s3, unique, TEST_KEK)  # creating the bucket
