"""Every event field that names a blob is a reference the blob collector keeps: an event
type added later with a `*_sha256` field the collector does not know would have its blobs
deleted as orphans (update requests' examples were, before this test)."""

from __future__ import annotations

import dataclasses
import typing

from mint.blobs.collector import REFERENCING, references
from mint.domain.events import Event
from mint.eventlog.codec import SCHEMAS, type_name


def _sample(cls: type) -> object:
    """An instance whose every `*_sha256` field holds a distinct hash."""
    hints = typing.get_type_hints(cls)
    values: dict[str, object] = {}
    for f in dataclasses.fields(cls):
        kind = hints[f.name]
        if f.name.endswith("sha256"):
            values[f.name] = f.name.ljust(64, "0")
        elif kind is str:
            values[f.name] = "x"
        elif kind is int:
            values[f.name] = 1
        elif kind is float:
            values[f.name] = 0.5
        elif kind is bool:
            values[f.name] = True
        elif f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING:
            continue
        elif dataclasses.is_dataclass(kind):
            values[f.name] = _sample(kind)  # type: ignore[arg-type]
        elif typing.get_origin(kind) in (tuple, dict):
            values[f.name] = typing.get_origin(kind)()
        else:
            raise AssertionError(f"{cls.__name__}.{f.name}: no sample for {kind}")
    return cls(**values)


def test_each_blob_an_event_names_is_a_reference_the_collector_keeps() -> None:
    for cls in SCHEMAS:
        blob_fields = [f.name for f in dataclasses.fields(cls) if f.name.endswith("sha256")]
        if cls.__name__ == "BaseModelRegistered" or not blob_fields:
            continue  # a base's fingerprint names no blob
        event = typing.cast(Event, _sample(cls))
        assert set(references(event)) == {getattr(event, n) for n in blob_fields}, cls
        assert type_name(event) in REFERENCING, f"the collector does not read {cls.__name__}"
