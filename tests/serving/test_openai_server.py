"""The OpenAI-compatible HTTP layer on its own server, over a stand-in for the router's
application (what it answers is under test, not the router: tests/client/test_openai.py
runs the whole path): HTTPS with the router's certificate, a failure after the first
token as an error event, a client that leaves ending the generation, and unknown paths
in OpenAI's error shape."""

from __future__ import annotations

import json
import ssl
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import openai
import pytest
from openai import OpenAI

from mint import logs
from mint.domain.errors import Unavailable
from mint.registry import Principal
from mint.rpc.auth import TokenTable, token_digest
from mint.tokenizer import byte_tokenizer
from mint.v1 import inference_pb2 as pb
from services.router.metrics import RouterMetrics
from services.router.openai_api.app import OpenAIApi
from services.router.openai_api.server import HttpServer
from services.router.servicer import Caller
from tests.tls_ca import authority

TOKEN = "alice-token"
TOKENS = TokenTable(
    [
        (token_digest(TOKEN), Principal("alice", frozenset({"acme"}))),
        (token_digest("ops-token"), Principal("ops", frozenset({"*"}), admin=True)),
    ]
)
METRICS = RouterMetrics()


class Projection:
    """The projection's catalog keys, as S3Objects lists them."""

    keys = ("catalog/acme/gone.json", "catalog/acme/tone.json", "catalog/other/theirs.json")

    def get(self, key: str) -> bytes | None:
        return None

    def keys_after(self, prefix: str, start_after: str, limit: int) -> list[str]:
        return [k for k in self.keys if k.startswith(prefix) and k > start_after][:limit]


class Erasures:
    """The router's catalog, as far as /v1/models asks it: acme/gone was erased."""

    def is_erased(self, adapter: str) -> bool:
        return adapter == "acme/gone"


class StandIn:
    """Streams `chunks` then fails, or streams until closed (`endless`)."""

    catalog = Erasures()

    def __init__(self, endless: bool = False) -> None:
        self.endless, self.closed = endless, threading.Event()

    def generate_stream(self, request: pb.GenerateRequest, caller: Caller) -> Iterator[Any]:
        try:
            yield pb.GenerateChunk(tokens=[1], text="a")
            while self.endless:
                time.sleep(0.01)
                yield pb.GenerateChunk(tokens=[1], text="a")
            raise Unavailable("the node went away; retry")
        finally:
            self.closed.set()


def serve(router: StandIn, tls: Any = None) -> HttpServer:
    api = OpenAIApi(cast(Any, router), TOKENS, Projection(), byte_tokenizer(), METRICS)
    return HttpServer(api.app(), "127.0.0.1:0", tls)


@pytest.fixture
def plain() -> Iterator[tuple[HttpServer, StandIn]]:
    router = StandIn()
    server = serve(router)
    yield server, router
    server.stop(1)


def test_https_with_the_routers_certificate(tmp_path: Path) -> None:
    ca = authority("http", tmp_path)
    server = serve(StandIn(), ca.tls("localhost"))
    try:
        request = urllib.request.Request(
            f"https://localhost:{server.port}/v1/models",
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
        context = ssl.create_default_context(cafile=str(ca.ca_file))
        with urllib.request.urlopen(request, context=context, timeout=10) as answer:
            listed = json.load(answer)
    finally:
        server.stop(1)
    assert listed["data"] == [
        {"id": "acme/tone", "object": "model", "created": 0, "owned_by": "acme"}
    ]


def test_models_are_every_adapter_not_erased_for_a_principal_of_every_tenant(
    plain: tuple[HttpServer, StandIn],
) -> None:
    server, _ = plain
    request = urllib.request.Request(
        f"http://127.0.0.1:{server.port}/v1/models", headers={"Authorization": "Bearer ops-token"}
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        listed = json.load(answer)["data"]
    assert [(m["id"], m["owned_by"]) for m in listed] == [
        ("acme/tone", "acme"),
        ("other/theirs", "other"),
    ]


def test_a_failure_after_the_first_token_ends_the_stream_with_an_error(
    plain: tuple[HttpServer, StandIn],
) -> None:
    server, router = plain
    api = OpenAI(base_url=f"http://127.0.0.1:{server.port}/v1", api_key=TOKEN, max_retries=0)
    got = []
    with pytest.raises(openai.APIError, match="the node went away"):
        for chunk in api.completions.create(model="acme/tone", prompt="hi", stream=True):
            got.append(chunk.choices[0].text)
    assert got == ["a"]
    assert router.closed.wait(5)


def test_a_client_that_leaves_ends_the_generation() -> None:
    router = StandIn(endless=True)
    server = serve(router)
    try:
        api = OpenAI(base_url=f"http://127.0.0.1:{server.port}/v1", api_key=TOKEN)
        stream = api.completions.create(model="acme/tone", prompt="hi", stream=True)
        assert next(iter(stream)).choices[0].text == "a"
        stream.close()
        assert router.closed.wait(10), "the router's stream was never closed"
    finally:
        server.stop(1)


def test_unknown_paths_answer_in_openais_error_shape(plain: tuple[HttpServer, StandIn]) -> None:
    server, _ = plain
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(f"http://127.0.0.1:{server.port}/v1/embeddings", timeout=10)
    assert missing.value.code == 404
    assert "/v1/embeddings" in json.load(missing.value)["error"]["message"]


def test_requests_are_counted_by_path_and_status(plain: tuple[HttpServer, StandIn]) -> None:
    server, _ = plain

    def counted() -> float:
        labels = {"path": "/v1/models", "status": "401"}
        return METRICS.registry.get_sample_value("mint_router_http_requests_total", labels) or 0

    before = counted()
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"http://127.0.0.1:{server.port}/v1/models", timeout=10)
    assert refused.value.code == 401 and refused.value.headers["WWW-Authenticate"] == "Bearer"
    assert counted() == before + 1


class Recording:
    """Answers at once, noting the request id the router's code would log and forward."""

    def __init__(self) -> None:
        self.seen: list[str | None] = []

    def generate(self, request: pb.GenerateRequest, caller: Caller) -> pb.GenerateResponse:
        self.seen.append(logs.current_request_id())
        return pb.GenerateResponse(tokens=[1], text="a")


def test_an_http_request_carries_its_x_request_id_into_the_routers_code() -> None:
    router = Recording()
    server = serve(cast(Any, router))
    try:
        body = json.dumps({"model": "acme/tone", "prompt": "hi", "max_tokens": 1}).encode()
        for header in ({"x-request-id": "req-42"}, {}):
            request = urllib.request.Request(
                f"http://127.0.0.1:{server.port}/v1/completions",
                data=body,
                headers={
                    "authorization": f"Bearer {TOKEN}",
                    "content-type": "application/json",
                    **header,
                },
            )
            with urllib.request.urlopen(request, timeout=10) as answer:
                assert answer.status == 200
    finally:
        server.stop()
    given, made = router.seen
    assert given == "req-42"  # the caller's
    assert made and made != "req-42"  # else a new one, never none
