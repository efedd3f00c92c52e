"""Size bounds on the free-form parts of commands, so no event can outgrow the log's
record size: each field is checked where it enters, with a message naming it."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

from .errors import InvalidArgument

MAX_TEXT = 1024  # reasons, run ids, label values, hyperparameter values
MAX_KEY = 128
MAX_ENTRIES = 128  # labels, metrics, hyperparameters, tool versions, datasets


def text(kind: str, value: str, limit: int = MAX_TEXT) -> str:
    if len(value) > limit:
        raise InvalidArgument(f"{kind} is {len(value)} characters; the limit is {limit}")
    return value


def mapping(kind: str, values: Mapping[str, object]) -> None:
    if len(values) > MAX_ENTRIES:
        raise InvalidArgument(f"{kind} has {len(values)} entries; the limit is {MAX_ENTRIES}")
    for key, value in values.items():
        text(f"{kind} key", key, MAX_KEY)
        if isinstance(value, str):
            text(f"{kind}[{key!r}]", value)


def items(kind: str, values: Iterable[str]) -> None:
    listed = list(values)
    if len(listed) > MAX_ENTRIES:
        raise InvalidArgument(f"{kind} has {len(listed)} entries; the limit is {MAX_ENTRIES}")
    for value in listed:
        text(kind, value, MAX_KEY * 2)


def metrics(values: Mapping[str, float]) -> None:
    mapping("metrics", values)
    for key, value in values.items():
        if not math.isfinite(value):
            raise InvalidArgument(f"metric {key!r} is {value}; metrics must be finite numbers")
