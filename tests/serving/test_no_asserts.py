"""Runtime invariants of the serving side and the registry raise real errors: `assert`
statements vanish under `python -O`, and a broken invariant would then pass silently."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CHECKED = [
    *sorted((REPO / "mint" / "serving").glob("*.py")),
    *sorted((REPO / "services" / "inference").glob("*.py")),
    REPO / "mint" / "registry.py",
    REPO / "mint" / "commands.py",
]


def test_no_assert_statements_in_runtime_code() -> None:
    found = [
        f"{path.relative_to(REPO)}:{node.lineno}"
        for path in CHECKED
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Assert)
    ]
    assert found == [], f"raise a real error instead of assert at {found}"


def test_a_broken_slot_table_is_caught_under_python_O() -> None:
    script = (
        "from mint.serving.residency import ResidentKey, SlotTable, SlotInvariantBroken\n"
        "table = SlotTable(slots=3, budget_bytes=100)\n"
        "table._free[0].append(1)  # slot 1 is free twice: it is about to be handed out twice\n"
        "try:\n"
        "    table.admit(ResidentKey('a', 1), 10)\n"
        "except SlotInvariantBroken as e:\n"
        "    print('caught:', e)\n"
    )
    run = subprocess.run(
        [sys.executable, "-O", "-c", script], cwd=REPO, capture_output=True, text=True
    )
    assert "caught: a slot of rank class 0 was lost" in run.stdout, run.stdout + run.stderr
