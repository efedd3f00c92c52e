"""One world for every client test, as a user meets MinT: a registry gRPC server, a
controller, an inference node and a router, on the real Kafka and S3. Lists and the router
read the projection, which `ClientWorld.project()` brings up to date (a rebuild writes
what the live projector would)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from minio import Minio
from typer.testing import CliRunner, Result

import mint
from mint.backends.kafka import KafkaConnection
from mint.backends.kafka_residency import KafkaErasureNotices
from mint.backends.s3 import S3Settings
from mint.backends.s3_blobs import S3BlobStore
from mint.backends.s3_objects import S3Objects
from mint.catalog.projection import ProjectionCatalog
from mint.cli_app import app
from mint.client.login import login_path
from mint.registry import Principal, Registry
from mint.rpc.auth import TokenTable, token_digest
from mint.validation.limits import Limits
from services.controller.controller import Controller, ControllerConfig
from services.inference.app import NodeConfig, NodeProcess
from services.registry.server import build_server
from services.router.app import RouterConfig, RouterProcess
from tests.keys import TEST_KEK
from tests.serving.world import SERVICE_TOKEN, World, new_world, train

from .installed import InstalledClient, install_client

ADMIN, ALICE, EVE = "admin-token", "alice-token", "eve-token"
TOKENS = TokenTable(
    (token_digest(token), principal)
    for token, principal in {
        ADMIN: Principal("ops", frozenset({"*"}), admin=True),
        ALICE: Principal("alice", frozenset({"acme"})),
        EVE: Principal("eve", frozenset({"other"})),
        SERVICE_TOKEN: Principal("router", frozenset(), service=True),
    }.items()
)
UPLOAD_LIMIT = 1024 * 1024  # a tiny LoRA is a few KiB; a larger upload is refused
NODE = "client-node"


@dataclass
class ClientWorld:
    world: World
    registry: str  # the registry's address
    router: str  # the router's
    root: Path
    openai_url: str = ""  # the router's OpenAI-compatible API, for OpenAI's client

    @property
    def fingerprint(self) -> str:
        return self.world.fingerprint

    def client(self, token: str = ALICE, **options: Any) -> mint.Client:
        return mint.Client(self.registry, router=self.router, token=token, **options)

    def lora(self, name: str, seed: int) -> Path:
        """A PEFT folder of a LoRA on the served base."""
        folder = self.root / name
        train(folder, seed)
        return folder

    def project(self) -> None:
        self.world.project()


class _Running:
    """Something with a `run(stop)` loop, on a thread."""

    def __init__(self, run: Any) -> None:
        self.stop = threading.Event()
        self.thread = threading.Thread(target=run, args=(self.stop,), daemon=True)
        self.thread.start()

    def halt(self) -> None:
        self.stop.set()
        self.thread.join(timeout=30)


@contextmanager
def _logged_to(path: Path, *names: str) -> Iterator[None]:
    """Send the loggers `names` to `path` only. The in-process services log from their
    own threads, and a CLI test's stderr (the root logger's, while it runs) would hold
    their lines beside the command's."""
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    loggers = [logging.getLogger(name) for name in names]
    for logger in loggers:
        logger.addHandler(handler)
        logger.propagate = False
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeHandler(handler)
            logger.propagate = True
        handler.close()


@pytest.fixture(scope="package")
def world(
    kafka: KafkaConnection,
    s3: Minio,
    s3_settings: S3Settings,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ClientWorld]:
    root = tmp_path_factory.mktemp("client")
    with _logged_to(root / "services.log", "services", "kafka"):
        yield from _world(kafka, s3, s3_settings, root)


def _world(
    kafka: KafkaConnection, s3: Minio, s3_settings: S3Settings, root: Path
) -> Iterator[ClientWorld]:
    w = new_world(kafka, s3)
    catalog = ProjectionCatalog(S3Objects(s3, w.bucket))
    blobs = S3BlobStore(s3, w.bucket, TEST_KEK)
    notices = KafkaErasureNotices(kafka, w.topics)
    registry = Registry(w.log, blobs, Limits(max_weights_bytes=UPLOAD_LIMIT), catalog, notices)
    server, port = build_server(registry, TOKENS)
    controller = _Running(Controller(ControllerConfig(kafka, w.topics, f"{w.bucket}-ctl")).run)
    node = NodeProcess(
        NodeConfig(NODE, kafka, s3_settings, TOKENS, bucket=w.bucket, topics=w.topics, report_s=0.3)
    )
    router = RouterProcess(
        RouterConfig(
            "client-router",
            kafka,
            s3_settings,
            TOKENS,
            SERVICE_TOKEN,
            bucket=w.bucket,
            topics=w.topics,
            http_address="127.0.0.1:0",
        )
    )
    try:
        deadline = time.monotonic() + 60
        while not router.watch.live():
            assert time.monotonic() < deadline, "the router never saw the node"
            time.sleep(0.1)
        assert router.http is not None
        yield ClientWorld(
            w,
            f"127.0.0.1:{port}",
            f"127.0.0.1:{router.port}",
            root,
            f"http://127.0.0.1:{router.http.port}/v1",
        )
    finally:
        router.stop(grace_s=1)
        node.stop(grace_s=1)
        controller.halt()
        server.stop(grace=1).wait()
        catalog.close()
        notices.close()
        w.log.close()


@dataclass(frozen=True)
class Served:
    ref: str
    adapter_id: str


@pytest.fixture(scope="package")
def served(world: ClientWorld) -> Served:
    """acme/served: one revision, on `stable`, projected and resident on the node. Its
    first generation is a cold start: the router asks, the controller places it, the
    node loads it from the projection."""
    with world.client() as client:
        client.create_adapter("acme/served", world.fingerprint)
        published = client.publish_revision("acme/served", world.lora("served", seed=1))
        client.promote("acme/served", "stable", 1)
        world.project()
        first = client.generate("hello", "acme/served@stable", timeout_s=90)
    assert first.node == NODE
    return Served("acme/served", published.adapter.adapter_id)


def mint_command(*args: str, env: dict[str, str] | None = None) -> Result:
    """The `mint` command, run in this process (typer's CliRunner)."""
    return CliRunner().invoke(app, list(args), env=env)


@pytest.fixture
def logged_in(world: ClientWorld, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Alice's login, stored in a config dir of this test's own."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    for name in ("MINT_REGISTRY", "MINT_ROUTER", "MINT_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    result = mint_command(
        "login", "--registry", world.registry, "--router", world.router, "--token", ALICE
    )
    assert result.exit_code == 0, result.output
    return login_path()


@pytest.fixture(scope="package")
def installed_client(tmp_path_factory: pytest.TempPathFactory) -> InstalledClient:
    """The wheel built afresh and installed bare (tests/client/installed.py), once a run."""
    return install_client(tmp_path_factory.mktemp("installed"))
