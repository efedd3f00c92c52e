"""Domain events ⇄ protobuf payloads, with upcasting of old schema versions on read.

Each event class maps to one message in proto/mint/v1/events.proto of the same name and
field names. Old versions stay readable forever: `UPCASTERS` turns a payload written with
an older schema into the current message before it is decoded.
"""

from __future__ import annotations

import dataclasses
import functools
import typing
from collections.abc import Callable
from typing import Any

from google.protobuf.message import Message

from mint.domain import events as ev
from mint.domain.errors import InvalidArgument
from mint.v1 import events_pb2 as pb
from mint.v1 import legacy_pb2

# event class -> (payload message class, current schema version)
SCHEMAS: dict[type, tuple[type[Message], int]] = {
    ev.AdapterCreated: (pb.AdapterCreated, 1),
    ev.RevisionPublished: (pb.RevisionPublished, 2),
    ev.EvaluationRecorded: (pb.EvaluationRecorded, 1),
    ev.ChannelGateSet: (pb.ChannelGateSet, 1),
    ev.ChannelMoved: (pb.ChannelMoved, 1),
    ev.AdapterArchived: (pb.AdapterArchived, 1),
    ev.AdapterErased: (pb.AdapterErased, 1),
    ev.BaseModelRegistered: (pb.BaseModelRegistered, 1),
    ev.UpdateRequested: (pb.UpdateRequested, 1),
    ev.UpdateFinished: (pb.UpdateFinished, 1),
}
BY_TYPE_NAME = {msg.DESCRIPTOR.full_name: (cls, msg) for cls, (msg, _) in SCHEMAS.items()}
# The event types a stream may begin with.
CREATIONS = frozenset(
    SCHEMAS[cls][0].DESCRIPTOR.full_name for cls in (ev.AdapterCreated, ev.BaseModelRegistered)
)


def _revision_published_v1(payload: bytes) -> Message:
    old = legacy_pb2.RevisionPublishedV1.FromString(payload)
    return pb.RevisionPublished(
        revision=old.revision,
        weights_sha256=old.weights_sha256,
        weights_size=old.weights_size,
        config_json=old.config_json,
        parents=[old.parent] if old.parent else [],
    )


# (type name, old version) -> payload bytes of that version -> current message
UPCASTERS: dict[tuple[str, int], Callable[[bytes], Message]] = {
    ("mint.v1.RevisionPublished", 1): _revision_published_v1,
}


def type_name(event: ev.Event) -> str:
    return SCHEMAS[type(event)][0].DESCRIPTOR.full_name


def encode(event: ev.Event) -> tuple[str, int, bytes]:
    """(event type name, schema version, payload bytes) for `event`."""
    message_class, version = SCHEMAS[type(event)]
    message = message_class(**_fields_to_proto(event))
    return (
        message_class.DESCRIPTOR.full_name,
        version,
        message.SerializeToString(deterministic=True),
    )


def decode(event_type: str, schema_version: int, payload: bytes) -> ev.Event:
    """The domain event for a stored payload, upcast from an older schema if need be."""
    if event_type not in BY_TYPE_NAME:
        raise InvalidArgument(f"unknown event type {event_type!r}")
    cls, message_class = BY_TYPE_NAME[event_type]
    current = SCHEMAS[cls][1]
    if schema_version == current:
        message = message_class.FromString(payload)
    elif (event_type, schema_version) in UPCASTERS:
        message = UPCASTERS[event_type, schema_version](payload)
    else:
        raise InvalidArgument(f"{event_type} schema version {schema_version} cannot be read")
    return typing.cast(ev.Event, _from_proto(cls, message))


def _fields_to_proto(obj: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            value = _fields_to_proto(value)
        elif isinstance(value, tuple):
            value = list(value)
        elif f.name == "parameters":  # map<string, Shape>
            value = {k: pb.Shape(dims=list(v)) for k, v in value.items()}
        out[f.name] = value
    return out


def _from_proto(cls: type, message: Any) -> Any:
    return cls(**{name: read(getattr(message, name)) for name, read in _readers(cls)})


@functools.cache
def _readers(cls: type) -> tuple[tuple[str, Callable[[Any], Any]], ...]:
    """How to turn each proto field of `cls` into its dataclass value; worked out once
    per class, since type-hint resolution costs more than decoding an event."""
    hints = typing.get_type_hints(cls)
    readers: list[tuple[str, Callable[[Any], Any]]] = []
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        if dataclasses.is_dataclass(hint):
            readers.append((f.name, functools.partial(_from_proto, typing.cast(type, hint))))
        elif f.name == "parameters":
            readers.append((f.name, _shapes))
        elif typing.get_origin(hint) is tuple:
            readers.append((f.name, tuple))
        elif typing.get_origin(hint) is dict:
            readers.append((f.name, dict))
        else:
            readers.append((f.name, _same))
    return tuple(readers)


def _shapes(raw: Any) -> dict[str, tuple[int, ...]]:
    return {k: tuple(int(d) for d in v.dims) for k, v in raw.items()}


def _same(raw: Any) -> Any:
    return raw
