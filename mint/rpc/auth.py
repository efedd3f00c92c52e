"""Bearer tokens → principals. The table holds sha256 digests of tokens, never the tokens.

Tokens file (JSON), given by --tokens-file or MINT_TOKENS_FILE:
  {"tokens": [{"sha256": "<hex of sha256(token)>", "principal": "alice",
               "tenants": ["acme"], "admin": false}]}
`python -m services.registry hash-token TOKEN` prints the digest for a token.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterable, Sequence
from pathlib import Path

from mint.domain.errors import Unauthenticated
from mint.registry import Principal


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class TokenTable:
    def __init__(self, entries: Iterable[tuple[str, Principal]]) -> None:
        self._by_digest = dict(entries)

    @classmethod
    def from_file(cls, path: Path) -> TokenTable:
        doc = json.loads(path.read_text())
        return cls((e["sha256"], _principal(e)) for e in doc["tokens"])

    def authenticate(self, metadata: Sequence[tuple[str, str | bytes]]) -> Principal:
        values = [v for k, v in metadata if k == "authorization"]
        if not values:
            raise Unauthenticated("missing `authorization: Bearer <token>` metadata")
        header = values[0] if isinstance(values[0], str) else values[0].decode()
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise Unauthenticated("authorization metadata must be `Bearer <token>`")
        digest = token_digest(token.strip())
        for known, principal in self._by_digest.items():
            if hmac.compare_digest(known, digest):
                return principal
        raise Unauthenticated("unknown or revoked token")


def _principal(entry: dict[str, object]) -> Principal:
    tenants = entry.get("tenants", [])
    if not isinstance(tenants, list) or not all(isinstance(t, str) for t in tenants):
        raise ValueError(f"tokens file: tenants of {entry.get('principal')!r} must be a list")
    return Principal(str(entry["principal"]), frozenset(tenants), entry.get("admin") is True)
