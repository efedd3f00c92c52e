"""`mint stack ...`: the local development stack (Kafka and S3 on 127.0.0.1), as
`make up` / `python -m deploy.local` run it.

The stack's code (`deploy/local`) comes with a MinT checkout, not with the wheel: it fetches
Kafka's jars with Maven and runs the SeaweedFS S3 gateway from the dev extras. Without it
these commands say what to install and where to run them.
"""

from __future__ import annotations

import importlib
import os
import sys
from contextlib import redirect_stdout
from pathlib import Path
from types import ModuleType
from typing import Annotated, Any

import typer

from . import options as o
from .output import EXIT_NOT_FOUND, emit, err, fail, out

app = typer.Typer(
    help="Start, stop and inspect a local Kafka + S3 for development (from a MinT checkout).",
    no_args_is_help=True,
    rich_markup_mode="markdown",
)
StateDir = Annotated[
    Path,
    typer.Option(
        envvar="MINT_STACK_STATE",
        help="Where its pid files, logs, data and endpoints live.",
    ),
]
DEFAULT_STATE = Path(".mint/stack")
CHECKOUT_NEEDED = (
    "error: the local stack comes with a MinT checkout, not with the wheel: run `mint stack` "
    "inside a clone of the repository (or `make up` there); it needs Java 17+ and Maven"
)


def _checkout_root() -> Path | None:
    """The MinT checkout holding the working directory, if any."""
    for folder in (Path.cwd(), *Path.cwd().parents):
        if (folder / "deploy" / "local" / "stack.py").is_file():
            return folder
    return None


def _stack_module() -> ModuleType:
    """`deploy.local.stack`, from the checkout around the working directory if it is not
    importable already; otherwise a one-line error saying what to do."""
    root = _checkout_root()
    if root is not None and str(root) not in sys.path:
        sys.path.insert(0, str(root))
    try:
        # By name: deploy/ is the checkout's tooling, not part of any install.
        return importlib.import_module("deploy.local.stack")
    except ImportError as exc:
        if root is None or exc.name in {"deploy", "deploy.local", "deploy.local.stack"}:
            raise fail(CHECKOUT_NEEDED) from None
        raise fail(
            f"error: the local stack needs {exc.name!r}, which is not installed: "
            "pip install -e '.[dev]' in the checkout (or `make venv`)"
        ) from None


def _stack(state_dir: Path, brokers: int = 1, *, started: bool = True) -> Any:
    """The stack in `state_dir`; `started`: one `up` made there (reading any other state
    dir would make a new stack's spec in it)."""
    module = _stack_module()
    if started and not (state_dir / "stack.json").is_file():
        where = os.fspath(state_dir)
        raise fail(
            f"error: no stack in {where}: start one with `mint stack up --state-dir {where}`",
            EXIT_NOT_FOUND,
        )
    try:
        return module.Stack(state_dir, brokers=brokers)
    except ValueError as exc:  # a state dir holding a stack of another size
        raise fail(f"error: {exc}", 2) from None


@app.command(epilog="Example: mint stack up --state-dir .mint/stack")
def up(
    state_dir: StateDir = DEFAULT_STATE,
    brokers: Annotated[
        int, typer.Option(min=1, max=3, help="Kafka nodes: 1, or 3 (replication 3, min ISR 2).")
    ] = 1,
    json: o.Json = False,
) -> None:
    """Start Kafka and S3 (what is not running yet) and wait until both answer; print the
    MINT_* variables the services read. The first run fetches Kafka's jars (minutes)."""
    if brokers == 2:
        raise typer.BadParameter("1 or 3 brokers", param_hint="--brokers")
    stack = _stack(state_dir, brokers, started=False)
    try:
        # Its own lines ("fetching Kafka jars ...") are progress: stderr, beside a spinner.
        with redirect_stdout(sys.stderr), err.status("starting Kafka and S3 ...", spinner="dots"):
            took = stack.up()
    except RuntimeError as exc:  # a server that did not start: its log is named
        stack.down()
        raise fail(f"error: {exc}") from None
    endpoints = stack.endpoints.as_env()

    def render() -> None:
        out.print(f"local stack ready in {took:.1f} s (state: {stack.state_dir})")
        for key, value in endpoints.items():
            out.print(f"  {key}={value}", markup=False)

    emit({"state_dir": str(stack.state_dir), "seconds": took, "env": endpoints}, json, render)


@app.command(epilog="Example: mint stack down")
def down(state_dir: StateDir = DEFAULT_STATE, json: o.Json = False) -> None:
    """Stop what `mint stack up` started (only the processes its pid files name)."""
    stopped = _stack(state_dir).down()
    emit(
        {"stopped": stopped},
        json,
        lambda: out.print(f"stopped: {', '.join(stopped) or 'nothing was running'}"),
    )


@app.command(epilog="Example: mint stack status --json")
def status(state_dir: StateDir = DEFAULT_STATE, json: o.Json = False) -> None:
    """Whether each server is running (exit 3 if any is not)."""
    running: dict[str, bool] = _stack(state_dir).running()

    def render() -> None:
        for name, alive in running.items():
            out.print(f"{name:10} {'running' if alive else 'stopped'}")

    emit({"running": running}, json, render)
    if not all(running.values()):
        raise typer.Exit(EXIT_NOT_FOUND)


@app.command(epilog='Example: mint stack env --json (in a shell: eval "$(mint stack env)")')
def env(state_dir: StateDir = DEFAULT_STATE, json: o.Json = False) -> None:
    """`export MINT_...` lines for a shell: the stack's Kafka and S3 endpoints."""
    endpoints: dict[str, str] = _stack(state_dir).endpoints.as_env()

    def render() -> None:
        for key, value in endpoints.items():
            typer.echo(f"export {key}={value}")

    emit(endpoints, json, render)
