"""What the projection must hold besides revision files, as the log says: channel pointers,
`current.json`, manifests, evaluations, catalog entries and base descriptions.

Every projection object is a function of the events (a rebuild writes the same bytes), so
the audit plans the log with the projector's own `Planner` (mint/projection.py)
and keeps, per key, only what the last write there leaves: the sha256 of its bytes, the
stream version of a mutable object, and the revision a pointer names, 44 bytes (a key's
deletion by an erasure drops them). After the walk each object is read once and compared
(`difference`); objects under `adapters/`, `catalog/` and `bases/` that no event writes
are named too (`Expected.unaccounted`). Revision files (weights and config) are left to verify's
own check, which reads them as their events come.

Records the projector skips (no event, or one its stream cannot have) are skipped here
too: `verify` names them anyway. An event the planner fails on otherwise (an unknown
event type: `InvalidArgument`) stops the live projector, which exits on it: it is named.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from typing import Protocol, runtime_checkable

from google.protobuf.message import DecodeError

from mint.eventlog.chain import ChainProblem
from mint.eventlog.port import Recorded
from mint.layout import ADAPTER_CONFIG, ADAPTER_WEIGHTS, MANIFEST
from mint.projection import DeletePrefix, Operation, Planner, PutJson

ADAPTERS = "adapters/"
# The top-level folders of the projection the log writes (the blobs may share its bucket).
LISTED = (ADAPTERS, "bases/", "catalog/")
LIST_PAGE = 1000
MISSING = "projection has no"
REPAIRED = "a rebuild into the projection repairs it"
# What planning a record no registry wrote raises; the projector skips such a record
# (streams/projector/runner.py's FOREIGN).
FOREIGN = (DecodeError, ValueError)
_DIGEST, _VERSION, _REVISION = 32, 8, 4  # bytes of an expectation


class ObjectProblem(ChainProblem):
    """A problem of a projection object: named by its key (in the text), not by an event;
    its stream is the adapter (or base) the key belongs to."""

    def __str__(self) -> str:
        return f"{self.stream_id}: {self.problem}" if self.stream_id else self.problem


@runtime_checkable
class Listed(Protocol):
    """A projection that can list its keys (S3Objects): objects no event writes are found."""

    def keys_after(self, prefix: str, start_after: str, limit: int) -> list[str]:
        """Up to `limit` keys under `prefix` after `start_after`, in order."""


class Expected:
    """The objects the log writes to the projection, but revision files, planned event by
    event in log order; for each key what its last write leaves."""

    def __init__(self) -> None:

        self.planner: Planner = Planner()
        # Keys under an adapter's folder, by that folder (an erasure deletes it whole);
        # every other key (catalog entries, bases) under "".
        self.groups: dict[str, dict[str, bytes]] = {}

    def note(self, r: Recorded) -> str | None:
        """Plan the event as the projector does; what is wrong if the projector cannot."""
        try:
            operations = self.planner.plan(r)
        except FOREIGN:
            return None  # skipped by the projector as by this walk; verify names the record
        except Exception as exc:  # not caught by the projector, which exits on it
            return (
                f"the projector cannot plan this event ({type(exc).__name__}: {exc}): a live "
                "projector stops at it, projecting nothing after it"
            )
        self._expect(operations)
        return None

    def _expect(self, operations: Iterable[Operation]) -> None:

        for op in operations:
            if isinstance(op, DeletePrefix):
                self._delete(op.key)
            elif isinstance(op, PutJson) and not op.key.endswith("/" + ADAPTER_CONFIG):
                group = _group(op.key)
                pointed = _pointed(op.key, op.body) if group else None
                objects = self.groups.setdefault(group, {})
                objects[op.key] = _expectation(op.body, op.version, pointed)
            # CopyBlob, and each revision's config: verify reads them as their events come

    def _delete(self, prefix: str) -> None:
        if self.groups.pop(prefix, None) is not None or _group(prefix) == prefix:
            return  # an adapter's folder (the planner deletes nothing else)
        for objects in self.groups.values():
            for key in [k for k in objects if k.startswith(prefix)]:
                del objects[key]

    def items(self) -> Iterator[tuple[str, bytes]]:
        """Each key and its expectation (for `difference`)."""
        for objects in self.groups.values():
            yield from objects.items()

    def accounts_for(self, key: str) -> bool:
        """Whether some event writes `key`: an object expected here, or a revision file of
        a revision whose manifest is."""
        objects = self.groups.get(_group(key), {})
        if key in objects:
            return True
        folder, _, name = key.rpartition("/")
        return name in (ADAPTER_WEIGHTS, ADAPTER_CONFIG) and f"{folder}/{MANIFEST}" in objects

    def unaccounted(self, projection: Listed) -> Iterator[ChainProblem]:
        """A problem for each object under the log's folders that no event writes."""
        for top in LISTED:
            for key in _keys(projection, top):
                if not self.accounts_for(key):
                    yield ObjectProblem(
                        stream_of(key),
                        0,
                        "",
                        f"projection holds {key}, which no event writes (readers may follow "
                        "it: delete it)",
                    )


def difference(key: str, expectation: bytes, stored: bytes | None) -> ChainProblem | None:
    """What is wrong with the object stored at `key`, if anything."""
    digest, version, pointed = _unpacked(expectation)
    if stored is None:
        where = f" (the log points it at revision {pointed})" if pointed else ""
        return ObjectProblem(stream_of(key), 0, "", f"{MISSING} {key}{where}")
    if hashlib.sha256(stored).digest() == digest:
        return None
    doc = _json(stored)
    held = doc.get("revision")
    if pointed and isinstance(held, int) and held != pointed:
        what = f"projection's {key} points at revision {held}, the log at revision {pointed}"
    else:
        what = (
            f"projection's {key} differs from what the log writes there (sha256 "
            f"{hashlib.sha256(stored).hexdigest()}, the log's {digest.hex()})"
        )
    claimed = doc.get("stream_version")
    if version and isinstance(claimed, int) and claimed > version:
        # The sink never replaces an object reflecting a later version, rebuilds included.
        fix = (
            f"it claims stream version {claimed}, past the log's {version}: written for "
            "events appended after this read, or forged, and the projector never replaces "
            "a later version (delete it, then rebuild)"
        )
    else:
        fix = REPAIRED
    return ObjectProblem(stream_of(key), 0, "", f"{what}; {fix}")


def stream_of(key: str) -> str:
    """The stream a projection key belongs to, for naming it: an adapter's `tenant/name`,
    a base's `base:<fingerprint>` (mint/registry.py's base_stream); "" for no such key."""
    parts = key.split("/")
    if parts[0] == ADAPTERS.rstrip("/") and len(parts) > 3:
        return f"{parts[1]}/{parts[2]}"
    if parts[0] == "catalog" and len(parts) == 3:
        return f"{parts[1]}/{parts[2].removesuffix('.json')}"
    if parts[0] == "bases" and len(parts) == 2:
        return "base:" + parts[1].removesuffix(".json")
    return ""


def _group(key: str) -> str:
    """The adapter folder a key is under (`adapters/<tenant>/<name>/`), else ""."""
    if not key.startswith(ADAPTERS):
        return ""
    parts = key.split("/", 3)
    return "/".join(parts[:3]) + "/" if len(parts) == 4 else ""


def _pointed(key: str, body: bytes) -> int | None:
    """The revision a channel pointer or `current.json` names; None for other objects."""
    rest = key[len(_group(key)) :]
    if not (rest.startswith("channels/") or rest == "current.json"):
        return None
    revision = _json(body).get("revision")
    return revision if isinstance(revision, int) else None


def _expectation(body: bytes, version: int | None, pointed: int | None) -> bytes:
    """What a key must hold, in 44 bytes: the sha256 of its bytes, the stream version a
    mutable object reflects (0: immutable), the revision a pointer names (0: none)."""
    return (
        hashlib.sha256(body).digest()
        + (version or 0).to_bytes(_VERSION, "big")
        + (pointed or 0).to_bytes(_REVISION, "big")
    )


def _unpacked(expectation: bytes) -> tuple[bytes, int, int]:
    version = expectation[_DIGEST : _DIGEST + _VERSION]
    return (
        expectation[:_DIGEST],
        int.from_bytes(version, "big"),
        int.from_bytes(expectation[_DIGEST + _VERSION :], "big"),
    )


def _json(data: bytes) -> dict[str, object]:
    try:
        doc = json.loads(data)
    except ValueError:
        return {}
    return doc if isinstance(doc, dict) else {}


def _keys(projection: Listed, prefix: str) -> Iterator[str]:
    after = ""
    while True:
        page = projection.keys_after(prefix, after, LIST_PAGE)
        yield from page
        if len(page) < LIST_PAGE:
            return
        after = page[-1]
