"""An `AdapterCatalog` that reads the whole event log for every page.

For the embedded back end and the demo, which have no projection: a page costs a read of
the entire log, so it is no choice for a large catalog (the Kafka back end lists from
the projection, mint/catalog/projection.py).
"""

from __future__ import annotations

from collections.abc import Mapping

from mint.domain.events import AdapterCreated
from mint.eventlog.port import EventLog

from .port import AdapterCatalog, AdapterSummary, Page, order_key


class LogScanCatalog(AdapterCatalog):
    def __init__(self, log: EventLog) -> None:
        self.log = log

    def page(self, tenant: str, after: str | None, labels: Mapping[str, str], limit: int) -> Page:
        start = order_key(after) if after is not None else ""
        # Labels are set once, at creation: the AdapterCreated events say everything.
        listed = sorted(
            (
                _summary(e)
                for e in (r.event for r in self.log.read_all())
                if isinstance(e, AdapterCreated)
                and e.tenant == tenant
                and order_key(e.name) > start
            ),
            key=lambda s: order_key(s.name),
        )
        matching = [s for s in listed if s.has_labels(labels)]
        page = matching[:limit]
        more = len(matching) > limit
        return Page(page, page[-1].name if more else None)


def _summary(created: AdapterCreated) -> AdapterSummary:
    return AdapterSummary(
        created.adapter_id,
        created.tenant,
        created.name,
        created.base_fingerprint,
        dict(created.labels),
    )
