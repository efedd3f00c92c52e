"""What every MinT command-line entry point shares: logging (`mint.logs`), a parser that shows the
module's docstring as its help, stopping cleanly on SIGTERM or SIGINT, and SIGUSR1 to
write every thread's stack to stderr (what a stuck service is waiting on)."""

from __future__ import annotations

import argparse
import faulthandler
import signal
import threading

from mint import logs


def parser(prog: str, doc: str | None) -> argparse.ArgumentParser:
    """Logging configured as by default (until the settings say otherwise: `logs.configure`
    again), and a parser whose --help starts with `doc`."""
    logs.configure()
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    return argparse.ArgumentParser(
        prog=prog, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )


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
