"""What every MinT command-line entry point shares: logging (`mint.logs`), a parser that shows the
module's docstring as its help, stopping cleanly on SIGTERM or SIGINT, and SIGUSR1 to
write every thread's stack to stderr (what a stuck service is waiting on)."""

from __future__ import annotations

import argparse
import errno
import faulthandler
import functools
import signal
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, ParamSpec, TypeVar

from mint import logs, tracing
from mint.domain.errors import DomainError

if TYPE_CHECKING:
    from mint.settings import ProcessOptions


def parser(prog: str, doc: str | None) -> argparse.ArgumentParser:
    """Logging configured as by default (until the settings say otherwise: `logs.configure`
    again), and a parser whose --help starts with `doc`."""
    logs.configure()
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    return argparse.ArgumentParser(
        prog=prog, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )


P = ParamSpec("P")
R = TypeVar("R")


def entry_point(main: Callable[P, R]) -> Callable[P, R]:
    """A service's `main`: a failure it reports as a domain error while starting (a port
    in use, a topic it may not create) or a port that is taken ends the process with one
    line and exit status 1, as a bad setting does, not a traceback."""

    @functools.wraps(main)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return main(*args, **kwargs)
        except DomainError as exc:
            raise SystemExit(str(exc)) from None
        except OSError as exc:  # an HTTP server's port (/metrics, probes)
            if exc.errno != errno.EADDRINUSE:
                raise
            raise SystemExit(
                f"a port this service listens on is in use ({exc.strerror}): pick free ones "
                "(--metrics-port, --port, --health-port) or stop what holds them"
            ) from None

    return run


def configure(config: ProcessOptions) -> None:
    """Logging and tracing as the process's settings say."""
    logs.configure(config.log_config())
    tracing.enable(config.otel)


def command(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], name: str, doc: str
) -> argparse.ArgumentParser:
    """A subcommand whose --help starts with `doc`."""
    return commands.add_parser(
        name, help=doc, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )


def stop_on_signals() -> threading.Event:
    """An event set by SIGTERM (Kubernetes stopping the pod) or SIGINT (Ctrl-C)."""
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    return stop
