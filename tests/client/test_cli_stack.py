"""`mint stack`: the tests' own running stack read back (status, env; nothing is started or
stopped there), and a stack that was never started. The bare install's answer without a
checkout is in tests/client/test_wheel.py."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from deploy.local.stack import Stack

from .conftest import mint_command


@pytest.fixture
def running_stack(endpoints: dict[str, str]) -> Path:
    return Path(os.environ.get("MINT_STACK_STATE", ".mint/stack"))


def test_status_and_env_read_the_running_stack(
    running_stack: Path, endpoints: dict[str, str]
) -> None:
    status = mint_command("stack", "status", "--state-dir", str(running_stack), "--json")
    assert status.exit_code == 0, status.output
    running = json.loads(status.stdout)["running"]
    assert running and all(running.values()) and "s3" in running
    shell = mint_command("stack", "env", env={"MINT_STACK_STATE": str(running_stack)})
    assert shell.exit_code == 0, shell.output
    assert shell.stdout.splitlines() == [f"export {k}={v}" for k, v in endpoints.items()]


def test_a_stack_never_started_says_so(tmp_path: Path) -> None:
    nowhere = tmp_path / "none"
    missing = mint_command("stack", "status", "--state-dir", str(nowhere))
    assert missing.exit_code == 3
    assert missing.stderr == (
        f"error: no stack in {nowhere}: start one with `mint stack up --state-dir {nowhere}`\n"
    )
    Stack(tmp_path / "idle")  # its ports and credentials chosen, nothing started
    idle = ["--state-dir", str(tmp_path / "idle")]
    stopped = mint_command("stack", "status", *idle)
    assert stopped.exit_code == 3 and "s3         stopped" in stopped.stdout
    down = mint_command("stack", "down", *idle)
    assert (down.exit_code, down.stdout) == (0, "stopped: nothing was running\n")
    assert not list((tmp_path / "idle").glob("*.pid"))
