"""ruff and mypy as the suite runs them. mypy takes about a minute, most of it on one core
while the other tests wait on servers, so the suite starts it as soon as it knows the
test will run (`start`) and the test collects the result (`outcome`)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MYPY = ("mypy",)
_running: dict[tuple[str, ...], subprocess.Popen[str]] = {}


def start(*args: str) -> None:
    """`python -m *args` in the repo, in the background."""
    # mypy's cache of the big third-party stubs (torch) lives with the other downloads,
    # so a fresh clone does not re-analyse them.
    cache = Path(os.environ.get("MINT_CACHE", REPO / ".mint")) / "mypy-cache"
    _running[args] = subprocess.Popen(
        [sys.executable, "-m", *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "MYPY_CACHE_DIR": str(cache)},
    )


def outcome(*args: str) -> tuple[int, str]:
    """The exit status and output of `python -m *args`, started now if not before."""
    if args not in _running:
        start(*args)
    process = _running[args]
    output, _ = process.communicate()  # interrupted (a timeout), stop_all kills it
    del _running[args]
    return process.returncode, output


def stop_all() -> None:
    """Those never collected (a run stopped early)."""
    for process in _running.values():
        process.kill()
        process.wait()
    _running.clear()
