"""ListAdapters page tokens: opaque to clients, a small versioned cursor inside.

A token is urlsafe base64 of `{"v": 2, "after": "<name>", "of": "<listing>"}`: the last
name the page examined (the next page starts after it: mint/catalog/port.py) and a digest
of the listing it belongs to (tenant and labels), so a token passed with another listing
is refused rather than skipping that listing's first names. Anything else, including a
token of another version, is refused with a message that says how to start over
(version 1, bound to no listing, is still taken for a release). A
token is a cursor, not a credential: every page checks the caller's tenant.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Mapping

from mint.domain.errors import InvalidArgument
from mint.domain.names import adapter_name

VERSION = 2
UNBOUND_VERSION = 1  # taken for one release, so that a walk survives a rolling upgrade
START_OVER = "list again without a page_token to start from the first page"


def encode(after: str, tenant: str, labels: Mapping[str, str]) -> str:
    doc = {"v": VERSION, "after": after, "of": _listing(tenant, labels)}
    return base64.urlsafe_b64encode(json.dumps(doc).encode()).decode()


def decode(token: str, tenant: str, labels: Mapping[str, str]) -> str | None:
    """The name to list after; None for the first page (no token)."""
    if not token:
        return None
    try:
        doc = json.loads(base64.urlsafe_b64decode(token.encode()))
        if doc["v"] == UNBOUND_VERSION:  # a replica of the release before: no listing named
            return adapter_name(doc["after"])
        if doc["v"] != VERSION:
            raise ValueError(f"version {doc['v']}")
        after, listing = adapter_name(doc["after"]), doc["of"]
    except (ValueError, KeyError, TypeError, binascii.Error, InvalidArgument):
        raise InvalidArgument(
            "page_token is not one this service issued (altered, truncated or from another "
            f"version): {START_OVER}"
        ) from None
    if listing != _listing(tenant, labels):
        raise InvalidArgument(
            f"page_token belongs to a listing of another tenant or other labels: {START_OVER}, "
            "or pass the tenant and labels it was issued for"
        )
    return after


def _listing(tenant: str, labels: Mapping[str, str]) -> str:
    """A short digest of what is listed (names and labels may hold any characters)."""
    identity = json.dumps([tenant, sorted(labels.items())], ensure_ascii=False)
    return hashlib.sha256(identity.encode()).hexdigest()[:16]
