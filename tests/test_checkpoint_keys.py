"""`verify --public-key` given the private signing key in place of its public one says
so, and how to make the public one; a file that is no key at all is not PEM."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
)

from mint.domain.errors import InvalidArgument
from mint.eventlog.checkpoints import SigningKey, public_keys

MAKE_PUBLIC = "`openssl pkey -in signing.pem -pubout -out signing.pub`"


def test_a_private_key_given_as_a_public_one_says_to_pass_the_public_one() -> None:
    key = SigningKey.generate()
    private = key.private.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    with pytest.raises(InvalidArgument) as refused:
        public_keys([private])
    assert str(refused.value) == (
        "a public key is needed but a private key was given (the signing key, which stays "
        f"with the registry): pass its public key, made with {MAKE_PUBLIC}"
    )
    assert list(public_keys([key.public_pem()])) == [key.key_id]


def test_a_file_that_is_no_key_is_not_pem() -> None:
    with pytest.raises(InvalidArgument, match="a public key is not PEM: make it with `openssl"):
        public_keys([b"garbage\n"])
