"""ruff and mypy are part of the suite, so CI enforces them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    # mypy's cache of the big third-party stubs (torch) lives with the other downloads,
    # so a fresh clone does not re-analyse them.
    cache = Path(os.environ.get("MINT_CACHE", REPO / ".mint")) / "mypy-cache"
    env = {**os.environ, "MYPY_CACHE_DIR": str(cache)}
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=REPO, capture_output=True, text=True, env=env
    )


def test_ruff_clean() -> None:
    lint = _run("ruff", "check", ".")
    assert lint.returncode == 0, lint.stdout + lint.stderr
    fmt = _run("ruff", "format", "--check", ".")
    assert fmt.returncode == 0, fmt.stdout + fmt.stderr


def test_mypy_clean() -> None:
    result = _run("mypy")
    assert result.returncode == 0, result.stdout + result.stderr
