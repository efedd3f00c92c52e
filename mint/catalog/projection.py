"""An `AdapterCatalog` over the projection's catalog entries (`catalog/<tenant>/<name>.json`,
written by streams/projector), read through the object store's listing.

A page lists the keys after its cursor under the tenant's prefix, then reads those
entries in parallel (a pool shared by every page in flight bounds the reads at once).
What it costs is bounded by the page, never by the catalog: with no label filter one
listing and `limit` reads; with one, at most `scan_pages` listings and `scan_pages *
limit` reads, after which it returns a shorter page with a cursor rather than scan on.
The list is what the projector has written so far: eventually consistent with the log.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

from mint.domain.errors import DataLoss
from mint.layout import catalog_prefix

from .port import ENTRY_SUFFIX, AdapterCatalog, AdapterSummary, Page, order_key

READERS = 8  # entries read at once, across every page in flight
SCAN_PAGES = 4  # a filtered page reads at most this many pages' worth of entries
REBUILD = "python -m streams.projector rebuild"


class ListedObjects(Protocol):
    """Read access to the projection (S3Objects in production)."""

    def get(self, key: str) -> bytes | None:
        """The object's bytes, or None if there is no such object."""

    def keys_after(self, prefix: str, start_after: str, limit: int) -> list[str]:
        """Up to `limit` keys under `prefix` that sort after `start_after`, in order."""


class ProjectionCatalog(AdapterCatalog):
    def __init__(
        self, objects: ListedObjects, readers: int = READERS, scan_pages: int = SCAN_PAGES
    ) -> None:
        self.objects, self.scan_pages = objects, scan_pages
        self._readers = ThreadPoolExecutor(readers, thread_name_prefix="catalog-read")

    def close(self) -> None:
        self._readers.shutdown()

    def page(self, tenant: str, after: str | None, labels: Mapping[str, str], limit: int) -> Page:
        prefix = catalog_prefix(tenant)
        found: list[AdapterSummary] = []
        budget = limit * self.scan_pages  # entries this page may read
        while budget > 0:
            batch = min(limit, budget)
            names = self._names(prefix, after, batch + 1)  # one more: is there a next?
            more = len(names) > batch
            names = names[:batch]
            budget -= len(names)
            for name, summary in zip(names, self._read(prefix, names), strict=True):
                after = name  # examined: the next page starts after it
                if summary is not None and summary.has_labels(labels):
                    found.append(summary)
                    if len(found) == limit:
                        return Page(found, name if more or name != names[-1] else None)
            if not more:
                return Page(found, None)
        return Page(found, after)  # the work is spent: a shorter page, and where to go on

    def _names(self, prefix: str, after: str | None, limit: int) -> list[str]:
        start = prefix + order_key(after) if after is not None else ""
        return [_name(prefix, key) for key in self.objects.keys_after(prefix, start, limit)]

    def _read(self, prefix: str, names: list[str]) -> list[AdapterSummary | None]:
        keys = [prefix + order_key(name) for name in names]
        return list(self._readers.map(self._entry, keys))

    def _entry(self, key: str) -> AdapterSummary | None:
        data = self.objects.get(key)
        if data is None:
            return None  # gone since it was listed: nothing to show
        try:
            doc = json.loads(data)
            return AdapterSummary(
                str(doc["adapter_id"]),
                str(doc["tenant"]),
                str(doc["name"]),
                str(doc["base_fingerprint"]),
                {str(k): str(v) for k, v in doc["labels"].items()},
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise DataLoss(
                f"catalog entry {key} is unreadable ({type(exc).__name__}: {exc}); "
                f"rebuild the projection ({REBUILD})"
            ) from exc


def _name(prefix: str, key: str) -> str:
    if not key.startswith(prefix) or not key.endswith(ENTRY_SUFFIX):
        raise DataLoss(
            f"{key} under {prefix} is not a catalog entry <name>{ENTRY_SUFFIX}; "
            f"remove it, or rebuild the projection ({REBUILD})"
        )
    return key[len(prefix) : -len(ENTRY_SUFFIX)]
