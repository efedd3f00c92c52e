"""Erasure notices: how the serving side learns that an adapter was erased.

The registry announces each erasure (after its tombstone is in the log, before the
erasure is marked finished, so a crash in between announces again). Nodes drop every
revision of the adapter from their slots, host memory and disk cache and never load it
again; routers answer its requests FAILED_PRECONDITION. On Kafka the notices are a
compacted table keyed by adapter id (`<residency prefix>.erased`), read from its
beginning by every node and router, so one that was down meanwhile learns them at start.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class ErasureNotice:
    adapter_id: str
    adapter: str  # tenant/name
    erased_at: str  # ISO 8601, UTC
    weights_sha256: tuple[str, ...]  # of its revisions: what a disk cache may hold

    def encode(self) -> bytes:
        return json.dumps(
            {
                "adapter": self.adapter,
                "erased_at": self.erased_at,
                "weights_sha256": list(self.weights_sha256),
            },
            sort_keys=True,
        ).encode()

    @classmethod
    def decode(cls, adapter_id: str, value: bytes) -> ErasureNotice:
        doc = json.loads(value)
        return cls(
            adapter_id, str(doc["adapter"]), str(doc["erased_at"]), tuple(doc["weights_sha256"])
        )

    def message(self) -> str:
        return (
            f"adapter {self.adapter} was erased at {self.erased_at}: its weights are gone for "
            "good; use another adapter"
        )


class ErasureNotices(Protocol):
    def announce(self, notice: ErasureNotice) -> None:
        """Publish the notice (durably: returns once it is stored); idempotent."""
