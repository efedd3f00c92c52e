"""The `AdapterCatalog` port: a tenant's adapters, page by page, for ListAdapters.

Contract (tests/contract/test_adapter_catalog.py runs it against each back end):
1. order: by name as the projection's catalog keys sort, byte by byte over
   `<name>.json` (so `a-b` comes before `a`, whose key `a.json` is greater);
2. a page holds the adapters after the exclusive cursor `after` whose labels include
   every wanted label, at most `limit` of them, and the cursor to continue from
   (None: nothing is left);
3. the cursor is the last name a page examined, and names are never reused or renamed,
   so a walk through every page returns each adapter the catalog held before the walk
   exactly once, whatever is created or changed meanwhile (one created during the walk
   shows up at most once: if its name sorts after the cursor);
4. archived adapters are listed like the others.
A page may be shorter than `limit` and still have a cursor: a back end bounds the work
one page does.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

ENTRY_SUFFIX = ".json"  # catalog/<tenant>/<name>.json


def order_key(name: str) -> str:
    """What pages are ordered by: the name as its catalog key ends."""
    return name + ENTRY_SUFFIX


@dataclass(frozen=True)
class AdapterSummary:
    adapter_id: str
    tenant: str
    name: str
    base_fingerprint: str
    labels: Mapping[str, str] = field(default_factory=dict)

    def has_labels(self, wanted: Mapping[str, str]) -> bool:
        return all(self.labels.get(k) == v for k, v in wanted.items())


@dataclass(frozen=True)
class Page:
    adapters: list[AdapterSummary]
    next_after: str | None  # the cursor of the next page; None: this was the last


class AdapterCatalog(ABC):
    @abstractmethod
    def page(self, tenant: str, after: str | None, labels: Mapping[str, str], limit: int) -> Page:
        """Up to `limit` adapters of `tenant` after the name `after` (None: from the
        first) carrying every label in `labels`, and the cursor to continue after."""

    def close(self) -> None:
        """Let go of what the catalog holds (reader threads); nothing by default."""
        return None


def walk(
    catalog: AdapterCatalog, tenant: str, labels: Mapping[str, str], limit: int
) -> Iterator[Page]:
    """Every page of `tenant`'s list, from the first (benchmarks, tests)."""
    after: str | None = None
    while True:
        page = catalog.page(tenant, after, labels, limit)
        yield page
        if page.next_after is None:
            return
        after = page.next_after
