"""Every service's command line: --help explains each setting, a missing one stops the
process with what to pass (no traceback), and the controller runs on Kafka settings
alone (the Kubernetes controller pod gets no S3 credentials)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

from deploy.local.registry import write_tokens
from deploy.local.services import ServiceProcess
from deploy.local.stack import free_ports
from mint.audit.settings import AuditGcSettings, AuditSettings, AuditVerifySettings
from mint.settings import MintSettings
from services.controller.settings import ControllerSettings
from services.inference.settings import NodeSettings
from services.registry.settings import RegistrySettings
from services.router.settings import RouterSettings
from streams.evaluator.settings import EvaluatorSettings
from streams.projector.settings import ProjectorRunSettings, ProjectorSettings
from streams.trainer.settings import TrainerSettings

COMMANDS: list[tuple[list[str], type[MintSettings]]] = [
    (["services.registry", "serve"], RegistrySettings),
    (["streams.projector", "run"], ProjectorRunSettings),
    (["streams.projector", "rebuild"], ProjectorSettings),
    (["services.controller"], ControllerSettings),
    (["services.router"], RouterSettings),
    (["services.inference"], NodeSettings),
    (["streams.trainer"], TrainerSettings),
    (["streams.evaluator"], EvaluatorSettings),
    (["mint.audit", "verify"], AuditVerifySettings),
    (["mint.audit", "replay"], AuditSettings),
    (["mint.audit", "gc"], AuditGcSettings),
]


def without_mint_variables() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("MINT_")}


@pytest.mark.parametrize(
    ("command", "model"), COMMANDS, ids=lambda c: " ".join(c) if isinstance(c, list) else ""
)
def test_help_explains_every_setting(command: list[str], model: type[MintSettings]) -> None:
    env = {**without_mint_variables(), "COLUMNS": "1000"}  # one line per option
    shown = subprocess.run(
        [sys.executable, "-m", *command, "--help"], capture_output=True, text=True, env=env
    )
    assert shown.returncode == 0, shown.stderr
    for name, field in model.model_fields.items():
        flag, explained = f"--{name.replace('_', '-')}", re.escape(str(field.description))
        # the explanation follows the flag, on its line or the next (a long flag's)
        assert re.search(rf"^ +{flag}[ ,][^\n]*\n? *{explained}", shown.stdout, re.MULTILINE), (
            f"{flag} or its explanation missing from {' '.join(command)} --help"
        )
    assert "MINT_KAFKA_BOOTSTRAP" in shown.stdout and "--secrets-dir" in shown.stdout


def test_a_missing_setting_stops_the_service_with_what_to_pass() -> None:
    started = subprocess.run(
        [sys.executable, "-m", "services.controller"],
        capture_output=True,
        text=True,
        env=without_mint_variables(),
        timeout=60,
    )
    assert started.returncode == 1
    assert started.stderr.strip() == (
        "missing kafka_bootstrap: pass --kafka-bootstrap or set MINT_KAFKA_BOOTSTRAP"
    )


def run_controller_until_active(env: dict[str, str], log_dir: Path, *flags: str) -> None:
    """Start `python -m services.controller` with `env` as its only MINT_* variables, and
    return once it is the active controller (its /metrics says so)."""
    port = free_ports(1)[0]
    prefix = f"ctl-{uuid.uuid4().hex[:8]}"
    args = ["--residency-topics-prefix", prefix, "--group", prefix, "--metrics-port", str(port)]
    controller = ServiceProcess("services.controller", [*args, *flags], log_dir / "ctl.log", env)
    try:
        controller.start().wait_ready(timeout_s=120)
        deadline = time.monotonic() + 60
        while "mint_controller_active 1.0" not in _metrics(port):
            assert time.monotonic() < deadline, controller.log_file.read_text()[-3000:]
            time.sleep(0.5)
    finally:
        controller.stop()


def _metrics(port: int) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
            return str(answer.read().decode())
    except OSError:
        return ""  # not serving yet


def test_the_controller_runs_with_only_the_kafka_bootstrap(
    endpoints: dict[str, str], tmp_path: Path
) -> None:
    run_controller_until_active(
        {"MINT_KAFKA_BOOTSTRAP": endpoints["MINT_KAFKA_BOOTSTRAP"]}, tmp_path
    )


def test_the_embedded_registry_needs_neither_kafka_nor_s3(tmp_path: Path) -> None:
    tokens = write_tokens(tmp_path / "tokens.json", {"t": {"principal": "p", "tenants": ["*"]}})
    args = [
        "serve",
        "--backend",
        "embedded",
        "--data-dir",
        str(tmp_path / "data"),
        "--port",
        "0",
        "--metrics-port",
        "0",
    ]
    registry = ServiceProcess(
        "services.registry", args, tmp_path / "registry.log", {"MINT_TOKENS_FILE": str(tokens)}
    )
    try:
        registry.start().wait_ready(timeout_s=60)
        assert (tmp_path / "data" / "events.db").exists()
    finally:
        registry.stop()
