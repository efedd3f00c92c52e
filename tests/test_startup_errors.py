"""A service that cannot start says why in one line on stderr, naming the server, file or port
and what to do, and exits non-zero: no traceback, no minutes of a library's retries. The
real entry points run as subprocesses (each group at once: most of their time is Python
starting), against a 127.0.0.1 port nobody listens on, S3 refusing the key, or bad files
and settings (tokens, TLS certificate and key, base and data directories, S3 endpoint)."""

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
from mint import startup
from mint.domain.errors import FailedPrecondition
from mint.models.base import build_base, tiny_llama_config
from mint.models.base_dir import check_base_dir
from mint.settings import S3Options
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
        "evaluator": ["streams.evaluator", *common, *s3, *kek_flag, "--evaluator-token", "t"],
        "trainer": [
            *["streams.trainer", *common, *s3, *kek_flag],
            *["--registry", "127.0.0.1:1", "--registry-token", "t"],
        ],
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


def tls_flags(pem: Path) -> list[str]:
    return ["--tls-cert-file", str(pem), "--tls-key-file", str(pem)]


def bad_files(tmp: Path, tokens: Path, node: list[str]) -> dict[tuple[str, str], list[str]]:
    """Cases of local files that will not do: tokens, data directory, TLS certificate and
    key (`node`: the node's command line, its servers unreachable)."""
    (tmp / "bad.json").write_text('{"tokens": [')
    (tmp / "no-tokens.json").write_text('{"...": {"tenants": 5}}')
    (tmp / "garbage.pem").write_text("garbage\n")
    (tmp / "empty.pem").write_text("")
    registry = ["services.registry", "serve", "--backend", "embedded", "--metrics-port", "0"]
    in_tmp = [*registry, "--data-dir", str(tmp / "registry")]
    return {
        **{
            ("tokens file", bad): [*in_tmp, "--tokens-file", str(tmp / bad)]
            for bad in ("bad.json", "no-tokens.json")
        },
        ("data dir", "registry"): [
            *registry,
            "--data-dir",
            "/proc/nope",
            "--tokens-file",
            str(tokens),
        ],
        ("tls garbage", "registry"): [
            *in_tmp,
            "--tokens-file",
            str(tokens),
            *tls_flags(tmp / "garbage.pem"),
        ],
        ("tls empty", "node"): [*node, *tls_flags(tmp / "empty.pem")],
    }


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
    refused = s3_flags(endpoints["MINT_S3_ENDPOINT"], endpoints["MINT_S3_ACCESS_KEY"], "wrong")
    commands = {
        **{("no kafka", name): command for name, command in unreachable_kafka.items()},
        # the same check (startup.require_s3) in every service with S3: one of them
        ("no s3", "registry"): unreachable_s3["registry"],
        ("s3 refuses the key", "registry"): services(
            tokens, endpoints["MINT_KAFKA_BOOTSTRAP"], refused
        )["registry"],
        ("s3 endpoint a url", "registry"): services(
            tokens, nobody, s3_flags("http://127.0.0.1:9000/x")
        )["registry"],
        ("no tokenizer", "node"): [*unreachable_kafka["node"], "--base-dir", str(base)],
        **bad_files(tmp, tokens, unreachable_kafka["node"]),
        ("port taken", "registry"): [
            *["services.registry", "serve", *embedded, "--tokens-file", str(tokens)],
            *["--port", str(taken.getsockname()[1]), "--metrics-port", "0"],
        ],
    }
    with taken:
        return failures(commands)


def test_unreachable_kafka_is_one_line_naming_it(outcomes: Outcomes, nobody: str) -> None:
    names = ("registry", "projector", "router", "node", "controller", "evaluator", "trainer")
    for name in names:
        line = one_line(outcomes["no kafka", name])
        assert line.startswith("cannot reach Kafka within 0.5 s"), (name, line)
        assert nobody in line and "--kafka-bootstrap or MINT_KAFKA_BOOTSTRAP" in line, line


def test_unreachable_s3_is_one_line_naming_it(outcomes: Outcomes, nobody: str) -> None:
    line = one_line(outcomes["no s3", "registry"])
    assert line.startswith("cannot reach S3 within 0.5 s over http"), line
    assert f"S3 at {nobody}" in line and "--s3-endpoint or MINT_S3_ENDPOINT" in line, line


def test_s3_refusing_the_key_is_one_line_naming_the_credentials(
    outcomes: Outcomes, endpoints: dict[str, str]
) -> None:
    line = one_line(outcomes["s3 refuses the key", "registry"])
    endpoint, key = endpoints["MINT_S3_ENDPOINT"], endpoints["MINT_S3_ACCESS_KEY"]
    assert line.startswith(f"S3 at {endpoint} refused access key {key!r} (Signature"), line
    assert "--s3-access-key or MINT_S3_ACCESS_KEY" in line, line
    assert "--s3-secret-key or MINT_S3_SECRET_KEY" in line, line


def test_the_s3_check_tells_refused_credentials_from_accepted_ones(
    endpoints: dict[str, str],
) -> None:
    def config(secret: str) -> S3Options:
        endpoint, key = endpoints["MINT_S3_ENDPOINT"], endpoints["MINT_S3_ACCESS_KEY"]
        given = {"s3_endpoint": endpoint, "s3_access_key": key, "s3_secret_key": secret}
        return S3Options.model_validate(given)

    startup.require_s3(config(endpoints["MINT_S3_SECRET_KEY"]), "mint", 5)  # no exit
    with pytest.raises(SystemExit) as stopped:
        startup.require_s3(config("wrong"), "mint", 5)
    assert "the credentials were refused" in str(stopped.value.code)


def test_an_s3_endpoint_with_a_scheme_or_path_is_one_line_asking_for_host_port(
    outcomes: Outcomes,
) -> None:
    assert one_line(outcomes["s3 endpoint a url", "registry"]) == (
        "bad s3_endpoint ('http://127.0.0.1:9000/x' is not host:port; give the server's host "
        "and port alone, without http:// or a path (for HTTPS also pass --s3-secure)): fix "
        "--s3-endpoint or MINT_S3_ENDPOINT"
    )


def test_a_bad_tokens_file_is_one_line_naming_it(outcomes: Outcomes) -> None:
    for bad, problem in [
        ("bad.json", "Expecting value"),
        ("no-tokens.json", "no 'tokens' field"),
    ]:
        line = one_line(outcomes["tokens file", bad])
        assert line.startswith("tokens file ") and f"{bad}: {problem}" in line, line
        assert line.endswith("; fix --tokens-file or MINT_TOKENS_FILE"), line


def test_a_data_dir_that_cannot_be_made_is_one_line_naming_it(outcomes: Outcomes) -> None:
    line = one_line(outcomes["data dir", "registry"])
    assert line.startswith("cannot make data directory /proc/nope: "), line
    assert line.endswith("; fix --data-dir or MINT_DATA_DIR"), line


def test_bad_tls_files_are_one_line_naming_the_file(outcomes: Outcomes) -> None:
    garbage = one_line(outcomes["tls garbage", "registry"])
    assert "garbage.pem is not a valid PEM certificate" in garbage, garbage
    assert garbage.endswith("; fix --tls-cert-file or MINT_TLS_CERT_FILE"), garbage
    empty = one_line(outcomes["tls empty", "node"])  # before Kafka, unreachable here
    assert "empty.pem is not a valid PEM certificate" in empty, empty
    assert "the file is empty" in empty, empty


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
