"""A service that cannot start says why in one line on stderr, naming the server, file or port
and what to do, and exits non-zero: no traceback, no minutes of a library's retries. The
real entry points run as subprocesses (each group at once: most of their time is Python
starting), against a 127.0.0.1 port nobody listens on or a bad base directory."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import TypeVar

import pytest

from deploy.local.registry import write_tokens
from deploy.local.stack import free_ports
from mint.domain.errors import FailedPrecondition
from mint.models.base import build_base, tiny_llama_config
from mint.models.base_dir import check_base_dir
from mint.tokenizer import VOCAB_SIZE, byte_tokenizer
from tests.keys import kek_file

QUICK = ["--startup-timeout-s", "0.5"]
K = TypeVar("K")


def s3_flags(endpoint: str, key: str = "k", secret: str = "s") -> list[str]:
    return ["--s3-endpoint", endpoint, "--s3-access-key", key, "--s3-secret-key", secret]


def services(tokens: Path, kafka: str, s3: list[str]) -> dict[str, list[str]]:
    """Each service's command line with these servers."""
    common = ["--kafka-bootstrap", kafka, *QUICK]
    tokens_flag = ["--tokens-file", str(tokens)]
    kek_flag = ["--kek-file", str(kek_file(tokens.parent))]  # they open sealed blobs
    return {
        "registry": ["services.registry", "serve", *common, *s3, *tokens_flag, *kek_flag],
        "projector": ["streams.projector", "run", *common, *s3, *kek_flag],
        "router": ["services.router", *common, *s3, *tokens_flag, "--service-token", "t"],
        "node": ["services.inference", "--name", "n1", *common, *s3, *tokens_flag],
        "controller": ["services.controller", *common],
    }


def failures(commands: dict[K, list[str]]) -> dict[K, subprocess.CompletedProcess[str]]:
    """Run every command at once; each one's outcome."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MINT_")}
    started = {
        name: subprocess.Popen(
            [sys.executable, "-m", *command],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for name, command in commands.items()
    }
    done = {}
    for name, proc in started.items():
        try:
            out, err = proc.communicate(timeout=90)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        done[name] = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    return done


def one_line(outcome: subprocess.CompletedProcess[str]) -> str:
    """The process's one line on stderr, having checked it failed with just that."""
    assert outcome.returncode == 1, outcome
    line = outcome.stderr.strip()
    assert line and "\n" not in line and "Traceback" not in line, outcome.stderr
    return line


Outcomes = dict[tuple[str, str], subprocess.CompletedProcess[str]]


@pytest.fixture(scope="module")
def nobody() -> str:
    """An address where nothing listens."""
    return f"127.0.0.1:{free_ports(1)[0]}"


@pytest.fixture(scope="module")
def outcomes(
    tmp_path_factory: pytest.TempPathFactory, endpoints: dict[str, str], nobody: str
) -> Outcomes:
    """Every case below, run at once: (case, service) -> how the process ended."""
    tmp = tmp_path_factory.mktemp("startup")
    tokens = write_tokens(tmp / "tokens.json", {"t": {"principal": "p", "tenants": ["*"]}})
    unreachable_kafka = services(tokens, nobody, s3_flags(nobody))
    unreachable_s3 = services(tokens, endpoints["MINT_KAFKA_BOOTSTRAP"], s3_flags(nobody))
    base = tmp / "base"  # a base saved without its tokenizer
    build_base(tiny_llama_config(vocab=VOCAB_SIZE)).save_pretrained(base)
    taken = socket.create_server(("127.0.0.1", 0))  # listening until all have ended
    embedded = ["--backend", "embedded", "--data-dir", str(tmp / "registry")]
    commands = {
        **{("no kafka", name): command for name, command in unreachable_kafka.items()},
        # the same check (startup.require_s3) in every service with S3: one of them
        ("no s3", "registry"): unreachable_s3["registry"],
        ("no tokenizer", "node"): [*unreachable_kafka["node"], "--base-dir", str(base)],
        ("port taken", "registry"): [
            *["services.registry", "serve", *embedded, "--tokens-file", str(tokens)],
            *["--port", str(taken.getsockname()[1]), "--metrics-port", "0"],
        ],
    }
    with taken:
        return failures(commands)


def test_unreachable_kafka_is_one_line_naming_it(outcomes: Outcomes, nobody: str) -> None:
    for name in ("registry", "projector", "router", "node", "controller"):
        line = one_line(outcomes["no kafka", name])
        assert line.startswith("cannot reach Kafka within 0.5 s"), (name, line)
        assert nobody in line and "--kafka-bootstrap or MINT_KAFKA_BOOTSTRAP" in line, line


def test_unreachable_s3_is_one_line_naming_it(outcomes: Outcomes, nobody: str) -> None:
    line = one_line(outcomes["no s3", "registry"])
    assert line.startswith("cannot reach S3 within 0.5 s over http"), line
    assert f"S3 at {nobody}" in line and "--s3-endpoint or MINT_S3_ENDPOINT" in line, line


def test_a_bad_base_dir_is_one_line_naming_what_it_lacks(outcomes: Outcomes) -> None:
    # checked before any server: Kafka (unreachable here) is not what it reports
    no_tokenizer = one_line(outcomes["no tokenizer", "node"])
    assert no_tokenizer.endswith(
        "base has no tokenizer.json: the tokenizer (tokenizer.save_pretrained writes it); "
        "fix --base-dir or MINT_BASE_DIR"
    ), no_tokenizer


def test_a_port_in_use_is_a_last_line_naming_it(outcomes: Outcomes) -> None:
    outcome = outcomes["port taken", "registry"]
    assert outcome.returncode == 1 and "Traceback" not in outcome.stderr, outcome
    last = outcome.stderr.strip().splitlines()[-1]  # after its INFO lines, if any
    assert last.startswith("cannot listen on 127.0.0.1:") and "the port is in use" in last


def test_the_base_dir_check_names_each_thing_missing(tmp_path: Path) -> None:
    base = tmp_path / "base"
    build_base(tiny_llama_config(vocab=VOCAB_SIZE)).save_pretrained(base)
    byte_tokenizer().save_pretrained(base)
    check_base_dir(str(base))  # complete
    a_file = base / "config.json"
    for path, problem in [
        (tmp_path / "nowhere", "does not exist"),
        (a_file, "is not a directory"),
        (tmp_path, "has no config.json"),
    ]:
        with pytest.raises(FailedPrecondition, match=problem):
            check_base_dir(str(path))
    (base / "model.safetensors").unlink()
    with pytest.raises(FailedPrecondition, match=r"has no \*\.safetensors weights"):
        check_base_dir(str(base))
