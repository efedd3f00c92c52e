"""What every `mint` command shares: its JSON output, and errors turned into one line that
says what to do next and an exit code (never a traceback for a refusal)."""

from __future__ import annotations

import dataclasses
import enum
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import typer
from rich.console import Console

import mint
from mint.client import MissingExtra, login

out = Console(soft_wrap=True, highlight=False)  # results
err = Console(stderr=True, soft_wrap=True, highlight=False)  # errors, progress

# Exit codes, for scripts: 1 any other refusal, 2 bad usage (click's own), and these.
EXIT_NOT_FOUND, EXIT_DENIED, EXIT_CONFLICT, EXIT_RETRY = 3, 4, 5, 6
_EXITS: dict[type[mint.MintError], int] = {
    mint.NotFound: EXIT_NOT_FOUND,
    mint.Unauthenticated: EXIT_DENIED,
    mint.PermissionDenied: EXIT_DENIED,
    mint.Conflict: EXIT_CONFLICT,
    mint.AlreadyExists: EXIT_CONFLICT,
    mint.Unavailable: EXIT_RETRY,
    mint.DeadlineExceeded: EXIT_RETRY,
}
# What to do next, by the error's class and, where one class covers several cases, by a
# phrase of the server's message that says which: the first rule that matches wins.
_NEXT_STEPS: tuple[tuple[type[mint.MintError], str, str], ...] = (
    (mint.NotFound, " has no revision", "`mint adapter show REF` lists its revisions"),
    (mint.NotFound, " has no channel", "`mint adapter show REF` lists its channels"),
    (
        mint.NotFound,
        "no base model",
        "check the fingerprint: `mint base register FOLDER` prints a folder's "
        "(registering needs an admin)",
    ),
    (
        mint.NotFound,
        "adapter ",
        "check the name: `mint adapter ls TENANT` lists a tenant's adapters",
    ),
    (mint.AlreadyExists, "", "names are never reused: choose another"),
    (mint.Conflict, "", "it changed meanwhile: read it again (`mint adapter show REF`) and retry"),
    (mint.FailedPrecondition, "", "see its state with `mint adapter show REF`"),
    (
        mint.PermissionDenied,
        "may not register base models",
        "registering a base model needs an admin's token: `mint login --token ...` "
        "(or set MINT_TOKEN)",
    ),
    (mint.PermissionDenied, "", "use a token of this tenant: `mint login --token ...`"),
    (mint.Unauthenticated, "", "log in with a valid token: `mint login` (or set MINT_TOKEN)"),
    (mint.InvalidArgument, "", "fix the input (`--help` shows the expected form)"),
    (mint.Unavailable, "", "try again in a moment"),
    (mint.DeadlineExceeded, "", "try again: it may or may not have been applied"),
)


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, enum.Enum):
        return value.name
    return value


def emit_json(value: Any) -> None:
    """`value` (a result dataclass, a list of them...) as one JSON document on stdout."""
    typer.echo(json.dumps(_plain(value), sort_keys=True))


def emit(value: Any, as_json: bool, render: Callable[[], None]) -> None:
    if as_json:
        emit_json(value)
    else:
        render()


@dataclasses.dataclass(frozen=True)
class Server:
    """What a command talks to: the registry or the router, at the address it was given."""

    which: str  # "registry" or "router"
    address: str

    def check_address(self) -> None:
        """A malformed address would fail only after the client's retries, as UNAVAILABLE."""
        if not all(_host_and_port(part) for part in self.address.split(",")):
            raise ValueError(
                f"the {self.which} address {self.address!r} is not HOST:PORT (or several, a,b): "
                f"fix it with {self.login}"
            )

    @property
    def login(self) -> str:
        """Where the address comes from."""
        return f"`mint login --{self.which} HOST:PORT` (or set MINT_{self.which.upper()})"

    def unreachable(self) -> str:
        return (
            f"if it keeps failing, check that the {self.which} at {self.address} is up and the "
            f"address is right: {self.login}"
        )


def _host_and_port(address: str) -> bool:
    """HOST:PORT, [IPv6]:PORT, a gRPC target with its scheme (dns:///HOST:PORT), or unix:."""
    if address.startswith("unix:"):
        return True
    host, colon, port = address.rpartition(":")
    return bool(colon and host) and not host.endswith(":") and port.isdigit()


def next_step(exc: mint.MintError, server: Server | None = None) -> str:
    """What to do about `exc` (""): the first rule of its class whose phrase it says."""
    step = next(
        (step for cls, phrase, step in _NEXT_STEPS if type(exc) is cls and phrase in exc.message),
        "",
    )
    if server is not None and isinstance(exc, mint.Unavailable):
        step = f"{step}; {server.unreachable()}"
    return step


def error_line(exc: mint.MintError, server: Server | None = None) -> str:
    line = f"error: {exc.message}"
    step = next_step(exc, server)
    if step:
        line = f"{line} — {step}"
    if exc.request_id:  # a command's: the registry applies an id at most once
        line += f" (request id {exc.request_id}: re-sending with --request-id {exc.request_id}"
        line += " is safe)"
    return line


def fail(message: str, code: int = 1) -> typer.Exit:
    err.print(message, markup=False)
    return typer.Exit(code)


@contextmanager
def reporting_errors(server: Server | None = None) -> Iterator[None]:
    """A refusal, a missing extra or bad input: one line on stderr and a non-zero exit.
    `server`: the one the command talks to, named when it does not answer."""
    try:
        yield
    except mint.MintError as exc:
        raise fail(error_line(exc, server), _EXITS.get(type(exc), 1)) from None
    except MissingExtra as exc:
        raise fail(f"error: {exc}") from None
    except (ValueError, FileNotFoundError, NotADirectoryError) as exc:
        raise fail(f"error: {exc}", 2) from None


@contextmanager
def connected(*, router: bool = False) -> Iterator[mint.Client]:
    """A client from the stored login (or MINT_* variables), errors reported as above."""
    with reporting_errors():
        settings = login.current()
        if not settings.token:
            raise ValueError("no token: run `mint login` (or set MINT_TOKEN)")
        server = (
            Server("router", settings.router) if router else Server("registry", settings.registry)
        )
        if not server.address:
            raise ValueError(f"no {server.which} address: run {server.login}")
        server.check_address()
    with (
        reporting_errors(server),
        mint.Client(
            settings.registry or None, router=settings.router or None, token=settings.token
        ) as client,
    ):
        yield client
