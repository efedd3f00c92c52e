"""Signed checkpoints (proto/mint/v1/checkpoints.proto): made, signed and opened here.

Pure: no Kafka or SQLite. A checkpoint is what a registry replica vouches for about one
partition it owns: the head (version, hash, offset) of every stream that has an event
in the span of the partition since its previous checkpoint, numbered 1, 2, 3 ... per
partition. Signed with Ed25519: whoever can rewrite the log can recompute its hash
chains, but not sign. Keys are PEM files (`openssl genpkey -algorithm ed25519`), named
in each checkpoint by a key id (16 hex digits of the sha256 of the raw public key), so
replicas may sign with different keys and keys can be rotated.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
    load_pem_private_key,
    load_pem_public_key,
)
from google.protobuf.message import DecodeError
from google.protobuf.timestamp_pb2 import Timestamp

from mint.domain.errors import InvalidArgument
from mint.v1.checkpoints_pb2 import Checkpoint, SignedCheckpoint, StreamHead

from .port import Recorded

FORMAT = 1
# Heads per checkpoint: about 100 bytes each, so a record stays far below Kafka's 1 MiB.
MAX_HEADS = 2000


class CheckpointStore(Protocol):
    """Where signed checkpoints are kept: a topic beside the event topic (Kafka), or a
    table of the embedded log. Checkpoint of partition p in the store's partition p."""

    def append(self, partition: int, signed: bytes) -> None:
        """Store a SignedCheckpoint durably (raise Unavailable if it could not be)."""
        ...

    def last(self, partition: int) -> bytes | None:
        """The last SignedCheckpoint stored for `partition`, if any."""
        ...

    def read_all(self) -> Iterator[tuple[int, str, bytes]]:
        """Every stored checkpoint: (partition, where it is stored, SignedCheckpoint)."""
        ...

    def close(self) -> None: ...


class BadCheckpoint(Exception):
    """A stored checkpoint that cannot be trusted; the message says why."""


def key_id(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(Encoding.Raw, PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


class SigningKey:
    """A replica's private key, as the operator's secret gives it (PEM, PKCS#8)."""

    def __init__(self, private: Ed25519PrivateKey) -> None:
        self.private = private
        self.key_id = key_id(private.public_key())

    @classmethod
    def generate(cls) -> SigningKey:
        """A new key (demos; an operator makes one with openssl and keeps it secret)."""
        return cls(Ed25519PrivateKey.generate())

    def public_pem(self) -> bytes:
        """The public key as `verify --public-key` reads it."""
        public = self.private.public_key()
        return public.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)

    @classmethod
    def from_pem(cls, pem: str | bytes) -> SigningKey:
        data = pem.encode() if isinstance(pem, str) else pem
        try:
            private = load_pem_private_key(data, password=None)
        except (ValueError, TypeError):
            raise InvalidArgument(
                "the checkpoint signing key is not an unencrypted PEM private key: make one "
                "with `openssl genpkey -algorithm ed25519`"
            ) from None
        if not isinstance(private, Ed25519PrivateKey):
            raise InvalidArgument(
                "the checkpoint signing key is not an Ed25519 key; make one with "
                "`openssl genpkey -algorithm ed25519`"
            )
        return cls(private)

    def sign(self, checkpoint: Checkpoint) -> bytes:
        """The SignedCheckpoint's bytes, with this key's id set in the checkpoint."""
        checkpoint.key_id = self.key_id
        body = checkpoint.SerializeToString(deterministic=True)
        signed = SignedCheckpoint(checkpoint=body, signature=self.private.sign(body))
        return signed.SerializeToString()


def public_keys(pems: Iterable[bytes]) -> dict[str, Ed25519PublicKey]:
    """Public keys by key id, from PEM files' contents (`openssl pkey -pubout`)."""
    keys = {}
    for pem in pems:
        try:
            public = load_pem_public_key(pem)
        except (ValueError, TypeError):
            raise InvalidArgument(_not_public(pem)) from None
        if not isinstance(public, Ed25519PublicKey):
            raise InvalidArgument("a public key is not an Ed25519 key")
        keys[key_id(public)] = public
    return keys


def _not_public(pem: bytes) -> str:
    """Why `pem` is not a public key: a private key given in its place, or not PEM."""
    make = "`openssl pkey -in signing.pem -pubout -out signing.pub`"
    if b"PRIVATE KEY-----" in pem:
        return (
            "a public key is needed but a private key was given (the signing key, which "
            f"stays with the registry): pass its public key, made with {make}"
        )
    return f"a public key is not PEM: make it with {make}"


def open_signed(value: bytes, keys: Mapping[str, Ed25519PublicKey]) -> Checkpoint:
    """The checkpoint inside a stored SignedCheckpoint, once its signature verifies with
    one of `keys`; BadCheckpoint saying what is wrong otherwise."""
    try:
        signed = SignedCheckpoint.FromString(value)
        checkpoint = Checkpoint.FromString(signed.checkpoint)
    except DecodeError:
        raise BadCheckpoint("does not parse as a signed checkpoint") from None
    public = keys.get(checkpoint.key_id)
    if public is None:
        raise BadCheckpoint(
            f"signed by key {checkpoint.key_id or '(none)'}, not by a key given to the "
            f"verifier ({', '.join(sorted(keys)) or 'none'}): pass its public key too, or "
            "it is forged"
        )
    try:
        public.verify(signed.signature, signed.checkpoint)
    except InvalidSignature:
        raise BadCheckpoint(
            f"its signature does not verify with key {checkpoint.key_id}: forged or altered"
        ) from None
    if checkpoint.format != FORMAT:
        raise BadCheckpoint(f"format {checkpoint.format} is not one this verifier reads")
    return checkpoint


@dataclass(frozen=True)
class Span:
    """What a partition's next checkpoint covers: its events from `from_offset` up to
    `to_offset`, and the last event of each stream there."""

    from_offset: int
    to_offset: int
    heads: Sequence[StreamHead]


def span_of(records: Iterable[Recorded], from_offset: int) -> Span:
    """The span of one partition's events (in log order) read from `from_offset`."""
    heads: dict[str, StreamHead] = {}
    to_offset = from_offset
    for r in records:
        e = r.envelope
        heads[e.stream_id] = StreamHead(
            stream_id=e.stream_id, version=e.stream_version, hash=e.hash, offset=r.position.offset
        )
        to_offset = r.position.offset + 1
    return Span(from_offset, to_offset, list(heads.values()))


def checkpoints_of(
    span: Span, partition: int, first_sequence: int, signer: str
) -> list[Checkpoint]:
    """The checkpoints that sign `span`, numbered from `first_sequence`: one per
    MAX_HEADS heads (none if the span has no event)."""
    now = Timestamp()
    now.FromNanoseconds(time.time_ns())
    return [
        Checkpoint(
            format=FORMAT,
            partition=partition,
            sequence=first_sequence + i,
            from_offset=span.from_offset,
            to_offset=span.to_offset,
            signed_at=now,
            heads=span.heads[start : start + MAX_HEADS],
            signer=signer,
        )
        for i, start in enumerate(range(0, len(span.heads), MAX_HEADS))
    ]


def unverified(value: bytes) -> Checkpoint:
    """A stored checkpoint read without checking its signature: where this signer's
    partition left off (BadCheckpoint if it does not parse)."""
    try:
        return Checkpoint.FromString(SignedCheckpoint.FromString(value).checkpoint)
    except DecodeError:
        raise BadCheckpoint("does not parse as a signed checkpoint") from None
