"""Throwaway Ed25519 keys, for the checkpoint tests."""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from mint.eventlog.checkpoints import SigningKey


def new_key(folder: Path, name: str = "signing") -> tuple[SigningKey, Path]:
    """A signing key and its public key file (what `verify --public-key` reads)."""
    key = SigningKey.generate()
    public = folder / f"{name}.pub"
    public.write_bytes(key.public_pem())
    return key, public


def private_pem(key: SigningKey) -> str:
    """The key as the operator's secret holds it."""
    return key.private.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()).decode()
