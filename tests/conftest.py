"""Shared fixtures. Kafka and S3 are real servers started by the test command.

`make test` starts a fresh stack and exports MINT_* variables; after `make up`, a plain
`pytest` finds the dev stack's endpoints in .mint/stack. With neither, the run stops with
a message instead of skipping: no test here may pass for lack of a server.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import pytest
from minio import Minio

from deploy.local.stack import ENDPOINT_VARIABLES
from mint.backends.kafka import KafkaConnection
from mint.backends.s3 import S3Settings, client
from mint.layout import ADAPTER_CONFIG, ADAPTER_WEIGHTS
from mint.models.base import build_base, fingerprint, tiny_llama_config
from mint.models.lora import attach_lora
from mint.registry import Upload
from tests import linters
from tests.tls_ca import Authority, authority


def pytest_collection_finish(session: pytest.Session) -> None:
    if any(item.name == "test_mypy_clean" for item in session.items):
        linters.start(*linters.MYPY)


def pytest_sessionfinish(session: pytest.Session) -> None:
    linters.stop_all()


def _endpoints() -> dict[str, str]:
    if all(k in os.environ for k in ENDPOINT_VARIABLES):
        return {k: os.environ[k] for k in ENDPOINT_VARIABLES}
    state = Path(os.environ.get("MINT_STACK_STATE", ".mint/stack")) / "endpoints.json"
    if state.exists():
        return dict(json.loads(state.read_text()))
    pytest.exit(
        "Kafka and S3 are not configured: run `make test` (starts them), or `make up` "
        "before running pytest directly",
        returncode=2,
    )


@pytest.fixture(scope="session")
def endpoints() -> dict[str, str]:
    return _endpoints()


@pytest.fixture(scope="session")
def kafka(endpoints: dict[str, str]) -> KafkaConnection:
    return KafkaConnection(endpoints["MINT_KAFKA_BOOTSTRAP"])


@pytest.fixture(scope="session")
def s3_settings(endpoints: dict[str, str]) -> S3Settings:
    return S3Settings(
        endpoints["MINT_S3_ENDPOINT"],
        endpoints["MINT_S3_ACCESS_KEY"],
        endpoints["MINT_S3_SECRET_KEY"],
    )


@pytest.fixture(scope="session")
def s3(s3_settings: S3Settings) -> Minio:
    return client(s3_settings)


@pytest.fixture
def unique() -> str:
    """A short name no other test uses: topics and buckets never collide between tests."""
    return f"t{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="session")
def model_files(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A tiny base (fingerprint, shapes) and a LoRA saved by peft, as upload bytes."""
    base = build_base(tiny_llama_config(), seed=0)
    facts = {
        "fingerprint": fingerprint(base),
        "shapes": {k: tuple(v.shape) for k, v in base.state_dict().items()},
    }
    folder = tmp_path_factory.mktemp("lora")
    attach_lora(base, rank=4, seed=1).save_pretrained(str(folder))  # wraps base in place
    return {
        **facts,
        "upload": Upload(
            (folder / ADAPTER_CONFIG).read_bytes(), (folder / ADAPTER_WEIGHTS).read_bytes()
        ),
    }


@pytest.fixture(scope="session")
def test_ca(tmp_path_factory: pytest.TempPathFactory) -> Authority:
    """The CA that TLS tests' servers and clients trust."""
    return authority("mint", tmp_path_factory.mktemp("ca"))


@pytest.fixture(scope="session")
def rogue_ca(tmp_path_factory: pytest.TempPathFactory) -> Authority:
    """A CA nobody trusts."""
    return authority("rogue", tmp_path_factory.mktemp("rogue-ca"))
