"""Envelope encryption of adapter blobs, for erasure by crypto-shredding.

Each adapter has a data key of its own (AES-256-GCM). Its blobs are sealed with it; the
data key is stored only wrapped by the operator's key-encryption key (KEK). Destroying
the wrapped data key makes every copy of the adapter's blobs unreadable, wherever the
ciphertext survives (backups, replicas, an S3 bucket's old versions).

What each seal authenticates (the GCM associated data) binds it to its place: a wrapped
key opens only as the key of the adapter it was made for, a sealed blob only as that
adapter's blob of that sha256, so stored objects cannot be swapped between adapters.
"""

from __future__ import annotations

import base64
import binascii
import os
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from mint.domain.errors import DataLoss, InvalidArgument

KEY_BYTES = 32  # AES-256
NONCE_BYTES = 12  # GCM's standard nonce; random per seal (a key seals few blobs)
TAG_BYTES = 16
SEALED_BLOB = b"mint-sealed-blob-v1\n"  # leads every sealed blob: its format
WRAPPED_KEY = b"mint-wrapped-key-v1\n"  # leads every wrapped data key


class Kek:
    """The key-encryption key: wraps and unwraps data keys, never sees a blob."""

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise InvalidArgument(f"a key-encryption key has {KEY_BYTES} bytes, not {len(key)}")
        self._aead = AESGCM(key)

    @classmethod
    def from_file(cls, path: Path) -> Kek:
        """A KEK file holds 32 raw bytes, or them as 64 hex digits or base64 (a Kubernetes
        Secret's value), optionally with a trailing newline."""
        raw = path.read_bytes()
        text = raw.strip()
        for decode in (bytes.fromhex, base64.b64decode):
            try:
                key = decode(text.decode("ascii"))
            except (ValueError, binascii.Error, UnicodeDecodeError):
                continue
            if len(key) == KEY_BYTES:
                return cls(key)
        if len(raw) == KEY_BYTES:
            return cls(raw)
        raise InvalidArgument(
            f"{path} holds no {KEY_BYTES}-byte key: write 64 hex digits, base64 of "
            f"{KEY_BYTES} bytes, or {KEY_BYTES} raw bytes (e.g. `openssl rand -hex 32`)"
        )

    @classmethod
    def generate(cls) -> tuple[Kek, bytes]:
        key = os.urandom(KEY_BYTES)
        return cls(key), key

    def wrap(self, adapter_id: str, data_key: bytes) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return WRAPPED_KEY + nonce + self._aead.encrypt(nonce, data_key, _key_context(adapter_id))

    def unwrap(self, adapter_id: str, wrapped: bytes) -> bytes:
        body = _body(wrapped, WRAPPED_KEY, f"the data key of adapter {adapter_id}")
        try:
            return self._aead.decrypt(
                body[:NONCE_BYTES], body[NONCE_BYTES:], _key_context(adapter_id)
            )
        except InvalidTag:
            raise DataLoss(
                f"the data key of adapter {adapter_id} does not open with this key-encryption "
                "key: the KEK is not the one it was wrapped with, or the key was altered"
            ) from None


def new_data_key() -> bytes:
    return AESGCM.generate_key(bit_length=8 * KEY_BYTES)


def seal(data_key: bytes, adapter_id: str, sha256: str, plaintext: bytes) -> bytearray:
    """The sealed blob, encrypted straight into its one buffer: an upload is held once
    more while it is stored, not twice."""
    nonce = os.urandom(NONCE_BYTES)
    head = len(SEALED_BLOB) + NONCE_BYTES
    sealed = bytearray(head + len(plaintext) + TAG_BYTES)
    sealed[:head] = SEALED_BLOB + nonce
    context = _blob_context(adapter_id, sha256)
    AESGCM(data_key).encrypt_into(nonce, plaintext, context, memoryview(sealed)[head:])
    return sealed


def open_sealed(data_key: bytes, adapter_id: str, sha256: str, sealed: bytes) -> bytes:
    body = _body(sealed, SEALED_BLOB, f"blob {sha256}")
    try:
        return AESGCM(data_key).decrypt(
            body[:NONCE_BYTES], body[NONCE_BYTES:], _blob_context(adapter_id, sha256)
        )
    except InvalidTag:
        raise DataLoss(
            f"blob {sha256} of adapter {adapter_id} is corrupt: it does not open with its "
            "data key (altered, or not this adapter's)"
        ) from None


def _body(stored: bytes, header: bytes, what: str) -> bytes:
    if not stored.startswith(header) or len(stored) < len(header) + NONCE_BYTES + TAG_BYTES:
        raise DataLoss(f"{what} is corrupt: not a sealed object of this format")
    return stored[len(header) :]


def _key_context(adapter_id: str) -> bytes:
    return b"mint data key\0" + adapter_id.encode()


def _blob_context(adapter_id: str, sha256: str) -> bytes:
    return b"mint blob\0" + adapter_id.encode() + b"\0" + sha256.encode()
