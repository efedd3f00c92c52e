"""ListAdapters page tokens: opaque to clients, a small versioned cursor inside.

A token is urlsafe base64 of `{"v": 1, "after": "<name>"}`, the last name the page
examined; the next page starts after it (mint/catalog/port.py). Anything else, including
a token of another version, is refused with a message that says how to start over.
"""

from __future__ import annotations

import base64
import binascii
import json

from mint.domain.errors import InvalidArgument
from mint.domain.names import adapter_name

VERSION = 1


def encode(after: str) -> str:
    return base64.urlsafe_b64encode(json.dumps({"v": VERSION, "after": after}).encode()).decode()


def decode(token: str) -> str | None:
    """The name to list after; None for the first page (no token)."""
    if not token:
        return None
    try:
        doc = json.loads(base64.urlsafe_b64decode(token.encode()))
        if doc["v"] != VERSION:
            raise ValueError(f"version {doc['v']}")
        return adapter_name(doc["after"])
    except (ValueError, KeyError, TypeError, binascii.Error, InvalidArgument):
        raise InvalidArgument(
            "page_token is not one this service issued (altered, truncated or from another "
            "version): list again without a page_token to start from the first page"
        ) from None
