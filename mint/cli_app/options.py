"""Options every `mint` command shares, and parsers for KEY=VALUE arguments."""

from __future__ import annotations

from typing import Annotated

import typer

from mint.client import parse_ref


def _checked_ref(value: str) -> str:
    """Refused here, as bad usage, rather than by the registry after a call."""
    try:
        parse_ref(value)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    return value


Ref = Annotated[
    str, typer.Argument(help="The adapter: tenant/name, e.g. acme/tone.", callback=_checked_ref)
]
Json = Annotated[
    bool, typer.Option("--json", help="Print the result as one JSON document (for scripts).")
]
RequestId = Annotated[
    str | None,
    typer.Option(
        "--request-id",
        help="The command's id (default: a fresh one). Re-sending a command with the id an "
        "error printed is safe: the registry applies it at most once.",
    ),
]
ExpectedVersion = Annotated[
    int | None,
    typer.Option(
        "--expected-version",
        help="Refuse (exit 5) unless the adapter is still at this version (`mint adapter show`).",
    ),
]
Pairs = Annotated[list[str] | None, typer.Option(help="KEY=VALUE, repeatable.")]


def pairs(values: list[str] | None, option: str) -> dict[str, str]:
    """`["a=1", "b=2"]` -> {"a": "1", "b": "2"}; a value without `=` is a usage error."""
    parsed = {}
    for value in values or []:
        key, sep, text = value.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{value!r}: write KEY=VALUE", param_hint=option)
        parsed[key] = text
    return parsed


def numbers(values: list[str] | None, option: str) -> dict[str, float]:
    parsed = {}
    for key, text in pairs(values, option).items():
        try:
            parsed[key] = float(text)
        except ValueError:
            raise typer.BadParameter(f"{key}={text}: the value must be a number") from None
    return parsed
