"""Resolving selectors to exact revisions by reading the projection (streams/projector).

The projection is what readers use: channel pointers (`channels/<c>.json`, `current.json`)
say which revision, each revision's `manifest.json` says its blob hash, size, base and
validated `adapter_config.json` (a projection written before manifests carried the
config needs a rebuild). Manifests never change, so they are cached until room is needed
(the least recently used go); pointers move, so they are cached for `pointer_ttl_s`
only. Both caches are bounded: a catalog of a million adapters is not held in memory.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from cachetools import LRUCache, TTLCache

from mint.domain.errors import Erased, NotFound
from mint.layout import ADAPTER_WEIGHTS, MANIFEST

from .erasures import ErasureNotice
from .requests import LogPosition, RevisionRef, Selector

MANIFESTS_CACHED = 10_000  # revisions (about 1 KB each, with the adapter's config)
POINTERS_CACHED = 10_000  # channel pointers


class ObjectSource(Protocol):
    def get(self, key: str) -> bytes | None:
        """The object's bytes, or None if there is no such object."""


def revision_key(adapter: str, revision: int, file: str) -> str:
    return f"adapters/{adapter}/revisions/{revision}/{file}"


def weights_key(ref: RevisionRef) -> str:
    return revision_key(ref.adapter, ref.revision, ADAPTER_WEIGHTS)


class Catalog:
    def __init__(
        self,
        objects: ObjectSource,
        pointer_ttl_s: float = 1.0,
        manifests_cached: int = MANIFESTS_CACHED,
        pointers_cached: int = POINTERS_CACHED,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.objects = objects
        self._manifests: LRUCache[tuple[str, int], RevisionRef] = LRUCache(manifests_cached)
        self._pointers: TTLCache[str, int] = TTLCache(pointers_cached, pointer_ttl_s, clock)
        self._lock = threading.Lock()  # the caches reorder themselves on every read
        # Erased adapters by name: kept for good, one small entry per erasure.
        self._erased: dict[str, ErasureNotice] = {}

    def erase(self, notice: ErasureNotice) -> None:
        """Forget an erased adapter: its requests are refused from now on."""
        with self._lock:
            self._erased[notice.adapter] = notice
            for key in [k for k in self._manifests if k[0] == notice.adapter]:
                del self._manifests[key]

    def is_erased(self, adapter: str) -> bool:
        with self._lock:
            return adapter in self._erased

    def resolve(self, selector: Selector) -> RevisionRef:
        adapter = str(selector.adapter)
        with self._lock:
            notice = self._erased.get(adapter)
        if notice is not None:
            raise Erased(notice.message())
        revision = selector.revision or self._pointed_revision(adapter, selector.channel)
        return self.revision(adapter, revision)

    def revision(self, adapter: str, revision: int) -> RevisionRef:
        with self._lock:
            cached = self._manifests.get((adapter, revision))
        if cached is not None:
            return cached
        manifest = self._json(revision_key(adapter, revision, MANIFEST))
        if manifest is None:
            self._require_adapter(adapter)
            raise NotFound(f"{adapter} has no revision {revision} in the projection")
        weights = manifest["files"][ADAPTER_WEIGHTS]
        ref = RevisionRef(
            adapter_id=manifest["adapter_id"],
            adapter=adapter,
            revision=revision,
            weights_sha256=weights["sha256"],
            weights_size=int(weights["size"]),
            base_fingerprint=manifest["base_fingerprint"],
            config_json=manifest["config_json"],
            log_position=_log_position(manifest.get("log_position")),
        )
        with self._lock:
            self._manifests[(adapter, revision)] = ref
        return ref

    def _pointed_revision(self, adapter: str, channel: str | None) -> int:
        key = f"adapters/{adapter}/" + (f"channels/{channel}.json" if channel else "current.json")
        with self._lock:
            cached = self._pointers.get(key)
        if cached is not None:
            return cached
        pointer = self._json(key)
        if pointer is None:
            self._require_adapter(adapter)
            what = f"no channel {channel!r}" if channel else "no revision on a default channel"
            raise NotFound(f"{adapter} has {what}; promote a revision first")
        revision = int(pointer["revision"])
        with self._lock:
            self._pointers[key] = revision
        return revision

    def _require_adapter(self, adapter: str) -> None:
        entry = self._json(f"catalog/{adapter}.json")
        if entry is None:
            raise NotFound(f"adapter {adapter} not found (is it created and projected?)")
        if entry.get("erased_at"):  # its files are gone with it
            raise Erased(
                f"adapter {adapter} was erased at {entry['erased_at']}: its weights are gone "
                "for good; use another adapter"
            )

    def _json(self, key: str) -> Any:
        data = self.objects.get(key)
        return None if data is None else json.loads(data)


def _log_position(doc: dict[str, int] | None) -> LogPosition | None:
    return None if doc is None else LogPosition(int(doc["partition"]), int(doc["offset"]))
