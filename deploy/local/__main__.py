"""Start, stop and use a local Kafka + S3 stack.

python -m deploy.local up [--brokers 3]   start (idempotent), print the endpoints
python -m deploy.local env                print `export MINT_...` lines for a shell
python -m deploy.local status             what is running
python -m deploy.local down               stop what `up` started (pid files only)
python -m deploy.local test [-- ARGS]     fresh stack, pytest ARGS, stop it (pass or fail)
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType

from .kafka import StartError
from .stack import Stack

DEFAULT_STATE = Path(os.environ.get("MINT_STACK_STATE", ".mint/stack"))


def _terminate_on_sigterm() -> None:
    """Turn SIGTERM/SIGHUP into SystemExit so `finally` blocks stop the servers."""

    def handler(signum: int, _frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGHUP, handler)


def cmd_up(stack: Stack) -> int:
    try:
        took = stack.up()
    except StartError as exc:
        print(f"error: {exc}", file=sys.stderr)
        stack.down()
        return 1
    print(f"local stack ready in {took:.1f} s (state: {stack.state_dir})")
    for key, value in stack.endpoints.as_env().items():
        print(f"  {key}={value}")
    return 0


def cmd_status(stack: Stack) -> int:
    for name, running in stack.running().items():
        print(f"{name:10} {'running' if running else 'stopped'}")
    return 0 if all(stack.running().values()) else 3


def cmd_test(pytest_args: list[str], brokers: int, keep: bool) -> int:
    """Run the test suite against a fresh stack; always stop it; keep state on failure."""
    state = Path(tempfile.mkdtemp(prefix="mint-test-"))
    stack = Stack(state, brokers=brokers)
    code = 1
    try:
        took = stack.up()
        print(f"[mint] Kafka and S3 ready in {took:.1f} s (state: {state})", flush=True)
        env = {**os.environ, **stack.endpoints.as_env(), "MINT_STACK_STATE": str(state)}
        started = time.monotonic()
        code = subprocess.call([sys.executable, "-m", "pytest", *pytest_args], env=env)
        print(f"[mint] pytest exited {code} after {time.monotonic() - started:.1f} s", flush=True)
    except StartError as exc:
        print(f"[mint] error: {exc}", file=sys.stderr, flush=True)
    finally:
        stopped = stack.down()
        left = [name for name, running in stack.running().items() if running]
        print(f"[mint] stopped {', '.join(stopped) or 'nothing'}", flush=True)
        if left:
            print(f"[mint] error: still running after down: {left}", file=sys.stderr)
            code = code or 1
        if code == 0 and not keep:
            shutil.rmtree(state, ignore_errors=True)
        else:
            print(f"[mint] logs and data kept in {state}", flush=True)
    return code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m deploy.local",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("command", choices=["up", "down", "status", "env", "test"])
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=DEFAULT_STATE,
        help="where pid files, logs and data live (default: %(default)s)",
    )
    parser.add_argument(
        "--brokers",
        type=int,
        choices=[1, 3],
        default=1,
        help="Kafka nodes: 1, or 3 with replication 3 / min ISR 2",
    )
    parser.add_argument("--keep", action="store_true", help="test: keep state even on success")
    args, rest = parser.parse_known_args(argv)
    rest = [a for a in rest if a != "--"]
    if rest and args.command != "test":
        parser.error(f"unexpected arguments: {rest}")
    _terminate_on_sigterm()
    if args.command == "test":
        return cmd_test(rest, args.brokers, args.keep)
    stack = Stack(args.state_dir, brokers=args.brokers)
    if args.command == "up":
        return cmd_up(stack)
    if args.command == "down":
        print(f"stopped: {', '.join(stack.down()) or 'nothing was running'}")
        return 0
    if args.command == "env":
        for key, value in stack.endpoints.as_env().items():
            print(f"export {key}={value}")
        return 0
    return cmd_status(stack)


if __name__ == "__main__":
    sys.exit(main())
