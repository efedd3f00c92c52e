"""Throwaway Ed25519 keys and a signer over a log, for the checkpoint tests."""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

from mint.eventlog.checkpoints import SigningKey


def new_key(folder: Path, name: str = "signing") -> tuple[SigningKey, Path]:
    """A signing key (as the registry loads it from its PEM secret) and its public key
    file (what `verify --public-key` reads)."""
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    public = folder / f"{name}.pub"
    public.write_bytes(
        private.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    )
    return SigningKey.from_pem(pem.decode()), public
