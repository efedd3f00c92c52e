"""ruff and mypy are part of the suite, so CI enforces them."""

from __future__ import annotations

from . import linters


def test_ruff_clean() -> None:
    status, output = linters.outcome("ruff", "check", ".")
    assert status == 0, output
    status, output = linters.outcome("ruff", "format", "--check", ".")
    assert status == 0, output


def test_mypy_clean() -> None:
    status, output = linters.outcome(*linters.MYPY)  # started early by conftest
    assert status == 0, output
