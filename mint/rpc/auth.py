"""Bearer tokens → principals. The table holds sha256 digests of tokens, never the tokens.

Tokens file (JSON), given by --tokens-file or MINT_TOKENS_FILE:
  {"tokens": [{"sha256": "<hex of sha256(token)>", "principal": "alice",
               "tenants": ["acme"], "admin": false},
              {"sha256": "<...>", "principal": "router", "service": true}]}
`python -m services.registry hash-token TOKEN` prints the digest for a token.

A service token (the router's) authenticates a MinT service calling another one on a
caller's behalf (the router forwarding to a node): it names that caller in metadata,
which a server behind the service (`authenticate_on_behalf`) trusts only from a service.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterable, Sequence
from pathlib import Path

from mint.domain.errors import Unauthenticated
from mint.registry import Principal

Metadata = Sequence[tuple[str, str | bytes]]
CALLER = "x-mint-caller"  # the principal a service acts for
CALLER_TENANTS = "x-mint-caller-tenants"  # its tenants, comma-separated


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def on_behalf_of(service_token: str, caller: Principal) -> list[tuple[str, str]]:
    """The metadata a service sends to act for `caller`."""
    return [
        ("authorization", f"Bearer {service_token}"),
        (CALLER, caller.name),
        (CALLER_TENANTS, ",".join(sorted(caller.tenants))),
    ]


class TokenTable:
    def __init__(self, entries: Iterable[tuple[str, Principal]]) -> None:
        self._by_digest = dict(entries)

    @classmethod
    def from_file(cls, path: Path) -> TokenTable:
        doc = json.loads(path.read_text())
        return cls((e["sha256"], _principal(e)) for e in doc["tokens"])

    def authenticate(self, metadata: Metadata) -> Principal:
        header = _value(metadata, "authorization")
        if header is None:
            raise Unauthenticated("missing `authorization: Bearer <token>` metadata")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise Unauthenticated("authorization metadata must be `Bearer <token>`")
        digest = token_digest(token.strip())
        for known, principal in self._by_digest.items():
            if hmac.compare_digest(known, digest):
                return principal
        raise Unauthenticated("unknown or revoked token; use a token the operator issued")

    def authenticate_on_behalf(self, metadata: Metadata) -> Principal:
        """For servers that a service fronts (the nodes): a service's call acts for the
        caller it names; any other token acts for itself, whatever caller it names."""
        principal = self.authenticate(metadata)
        if not principal.service:
            return principal
        name = _value(metadata, CALLER)
        if not name:
            raise Unauthenticated(
                f"a service token must name the caller it acts for (`{CALLER}` metadata)"
            )
        tenants = _value(metadata, CALLER_TENANTS) or ""
        return Principal(name, frozenset(t for t in tenants.split(",") if t))


def _value(metadata: Metadata, key: str) -> str | None:
    value = next((v for k, v in metadata if k == key), None)
    return value.decode() if isinstance(value, bytes) else value


def _principal(entry: dict[str, object]) -> Principal:
    tenants = entry.get("tenants", [])
    if not isinstance(tenants, list) or not all(isinstance(t, str) for t in tenants):
        raise ValueError(f"tokens file: tenants of {entry.get('principal')!r} must be a list")
    return Principal(
        str(entry["principal"]),
        frozenset(tenants),
        entry.get("admin") is True,
        entry.get("service") is True,
    )
