"""Names users choose. They end up in S3 keys, so only a safe alphabet is accepted."""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import InvalidArgument

_TENANT = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_NAME = re.compile(r"[a-z0-9](?:[a-z0-9._-]{0,126}[a-z0-9])?")
_CHANNEL = re.compile(r"[a-z](?:[a-z0-9-]{0,30}[a-z0-9])?")
_SUITE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,127}")
MAX_UPDATE_ID = 128  # an update's id, with a stage's suffix, must stay a short request id


def _check(kind: str, value: str, pattern: re.Pattern[str], rule: str) -> str:
    if not pattern.fullmatch(value) or ".." in value:
        raise InvalidArgument(f"invalid {kind} {value!r}: {rule}")
    return value


def tenant(value: str) -> str:
    return _check("tenant", value, _TENANT, "1-63 of a-z 0-9 -, starting and ending alphanumeric")


def adapter_name(value: str) -> str:
    rule = "1-128 of a-z 0-9 . _ -, starting and ending alphanumeric, no '..'"
    return _check("adapter name", value, _NAME, rule)


def channel(value: str) -> str:
    return _check("channel", value, _CHANNEL, "1-32 of a-z 0-9 -, starting with a letter")


def suite(value: str) -> str:
    return _check("evaluation suite", value, _SUITE, "1-128 of A-Z a-z 0-9 . _ / -")


def fingerprint(value: str) -> str:
    """A base model's fingerprint: the sha256 its files hash to."""
    if len(value) != 64 or not all(c in "0123456789abcdef" for c in value):
        raise InvalidArgument(
            f"base fingerprint must be 64 lower-case hex digits, got {value!r}: "
            "`mint base register` prints it"
        )
    return value


def label_key(value: str) -> str:
    return _check("label key", value, _SUITE, "1-128 of A-Z a-z 0-9 . _ / -")


def label_value(value: str) -> str:
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise InvalidArgument(f"invalid label value {value!r}: no control characters")
    return value


@dataclass(frozen=True, order=True)
class AdapterRef:
    """`tenant/name`: the human identity of an adapter (its id is issued separately)."""

    tenant: str
    name: str

    def __post_init__(self) -> None:
        tenant(self.tenant)
        adapter_name(self.name)

    @classmethod
    def parse(cls, text: str) -> AdapterRef:
        parts = text.split("/")
        if len(parts) != 2:
            raise InvalidArgument(f"invalid adapter reference {text!r}: expected tenant/name")
        return cls(parts[0], parts[1])

    def __str__(self) -> str:
        return f"{self.tenant}/{self.name}"
