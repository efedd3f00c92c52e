"""The collector deletes every blob no event references, so it must know every event
field that references one: a `*_sha256` field of an event the collector does not read
would have its blobs deleted. Checked over every event type the codec knows."""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

import pytest

from mint.blobs.collector import REFERENCING, references
from mint.eventlog import codec

DIGEST = "d" * 64


def example(cls: type) -> Any:
    """An instance of the event dataclass `cls`, every sha256 field set to DIGEST."""
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        origin = typing.get_origin(hint)
        if f.name.endswith("_sha256"):
            values[f.name] = DIGEST
        elif dataclasses.is_dataclass(hint):
            values[f.name] = example(typing.cast(type, hint))
        elif origin is dict or hint is dict:
            values[f.name] = {}
        elif origin is tuple:
            values[f.name] = ()
        else:
            values[f.name] = typing.cast(type, hint)()
    return cls(**values)


def sha256_fields(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls) if f.name.endswith("_sha256")]


@pytest.mark.parametrize("cls", list(codec.SCHEMAS), ids=lambda c: c.__name__)
def test_every_blob_an_event_names_is_a_reference_the_collector_reads(cls: type) -> None:
    named = sha256_fields(cls)
    found = list(references(example(cls)))
    assert found == [DIGEST] * len(named), f"{cls.__name__}: {named} not all references"
    assert (codec.type_name(example(cls)) in REFERENCING) == bool(named), cls.__name__
