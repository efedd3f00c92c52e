"""The router's OpenAI-compatible HTTP API, with OpenAI's own Python client, against the
real servers (registry, controller, node and router on Kafka and S3): a completion
streamed from an adapter, greedy text equal to gRPC `Generate`'s for the same request
(completions, chat, a stack), the models a caller may use, and refusals as OpenAI's
errors with their HTTP status."""

from __future__ import annotations

import re
from pathlib import Path

import openai
import pytest
from openai import OpenAI
from openai.types.chat import ChatCompletionMessageParam

from mint.client import Sampling, Selector

from .conftest import ADMIN, ALICE, EVE, ClientWorld, Served

PROMPT = "héllo wörld, €"  # characters of two and three UTF-8 bytes: several tokens each
MEMORY = "acme/oai-memory"
README = Path(__file__).resolve().parents[2] / "README.md"


def api(world: ClientWorld, token: str = ALICE) -> OpenAI:
    return OpenAI(base_url=world.openai_url, api_key=token, max_retries=0, timeout=60)


def test_a_completion_streams_from_an_adapter_and_is_the_grpc_generation(
    world: ClientWorld, served: Served
) -> None:
    with world.client() as client:
        expected = client.generate(PROMPT, f"{served.ref}@1", Sampling(12, stop_at_eos=True))
    oa = api(world)
    stream = oa.completions.create(
        model=f"{served.ref}@stable", prompt=PROMPT, max_tokens=12, temperature=0, stream=True
    )
    chunks = list(stream)
    whole = oa.completions.create(
        model=f"{served.ref}@1", prompt=PROMPT, max_tokens=12, temperature=0
    )
    streamed = "".join(c.choices[0].text for c in chunks)
    assert streamed == whole.choices[0].text == expected.text
    assert len([c for c in chunks if c.choices[0].text]) > 1, "sent in pieces as it decodes"
    finish = "length" if len(expected.tokens) == 12 else "stop"
    assert chunks[-1].choices[0].finish_reason == whole.choices[0].finish_reason == finish
    assert whole.object == "text_completion" and whole.model == f"{served.ref}@1"


def test_a_chat_is_the_generation_of_its_documented_prompt(
    world: ClientWorld, served: Served
) -> None:
    messages: list[ChatCompletionMessageParam] = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Grüße!"},
    ]
    prompt = "system: Be brief.\nuser: Grüße!\nassistant:"  # the simple template (README)
    with world.client() as client:
        expected = client.generate(prompt, f"{served.ref}@1", Sampling(10, stop_at_eos=True))
    oa = api(world)
    chat = oa.chat.completions.create(
        model=f"{served.ref}@1",
        messages=messages,
        max_tokens=10,
        temperature=0,
    )
    chunks = list(
        oa.chat.completions.create(
            model=f"{served.ref}@1",
            messages=messages,
            max_completion_tokens=10,
            temperature=0,
            stream=True,
        )
    )
    assert chat.choices[0].message.content == expected.text
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == expected.text
    assert chat.choices[0].message.role == chunks[0].choices[0].delta.role == "assistant"


@pytest.fixture(scope="module")
def memory(world: ClientWorld) -> str:
    """A second adapter, to stack on `served` with weight 0.5."""
    with world.client() as client:
        client.create_adapter(MEMORY, world.fingerprint)
        client.publish_revision(MEMORY, world.lora("oai-memory", seed=7))
    world.project()
    return MEMORY


def test_a_stack_named_in_the_mint_field_is_the_grpc_stack(
    world: ClientWorld, served: Served, memory: str
) -> None:
    with world.client() as client:
        stack: list[str | Selector] = [
            f"{served.ref}@1",
            Selector(memory, revision=1, weight=0.5),
        ]
        expected = client.generate(PROMPT, stack, Sampling(8, stop_at_eos=True), timeout_s=90)
        alone = client.generate(PROMPT, f"{served.ref}@1", Sampling(8, stop_at_eos=True))
    completion = api(world).completions.create(
        model=f"{served.ref}@1",
        prompt=PROMPT,
        max_tokens=8,
        temperature=0,
        extra_body={"mint": {"adapters": [{"model": f"{memory}@1", "weight": 0.5}]}},
    )
    assert completion.choices[0].text == expected.text
    assert expected.tokens != alone.tokens  # the second adapter changes the output


def test_models_are_the_adapters_of_the_callers_tenants(world: ClientWorld, served: Served) -> None:
    mine = {m.id: m.owned_by for m in api(world).models.list()}
    theirs = {m.id for m in api(world, EVE).models.list()}
    everyone = {m.id for m in api(world, ADMIN).models.list()}  # a principal of every tenant
    assert mine[served.ref] == "acme" and served.ref in everyone
    assert not any(name.startswith("acme/") for name in theirs)


def test_refusals_are_openai_errors_with_their_http_status(
    world: ClientWorld, served: Served
) -> None:
    def complete(token: str = ALICE, model: str = served.ref, **options: object) -> None:
        api(world, token).completions.create(model=model, prompt="hi", **options)  # type: ignore[call-overload]

    with pytest.raises(openai.AuthenticationError) as bad_token:
        complete("not-a-token")
    with pytest.raises(openai.AuthenticationError):
        complete("not-a-token", stream=True)  # refused before anything streams
    with pytest.raises(openai.PermissionDeniedError) as other_tenant:
        complete(EVE)
    with pytest.raises(openai.NotFoundError) as unknown:
        complete(model="acme/never-made@stable")
    with pytest.raises(openai.BadRequestError) as too_long:
        complete(max_tokens=100_000)
    with pytest.raises(openai.BadRequestError) as unsupported:
        complete(stop=["\n"])
    with pytest.raises(openai.BadRequestError) as unnamed:
        complete(model="no-tenant")
    assert bad_token.value.status_code == 401 and "token" in bad_token.value.message
    assert other_tenant.value.status_code == 403 and "acme" in other_tenant.value.message
    assert unknown.value.status_code == 404 and "never-made" in unknown.value.message
    assert "max_tokens" in too_long.value.message
    assert "stop is not supported" in unsupported.value.message
    assert "tenant/name" in unnamed.value.message
    assert unknown.value.code == "not_found" and unknown.value.type == "not_found_error"


def test_the_readme_example_runs_as_written(
    world: ClientWorld, served: Served, memory: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """README's "OpenAI-compatible API" example: only the address, the token and the
    adapters' names replaced (the stack it names is the one the test above warmed)."""
    section = README.read_text().split("## OpenAI-compatible API", 1)[1].split("\n## ", 1)[0]
    (snippet,) = re.findall(r"```python\n(.*?)```", section, re.DOTALL)
    replaced = {
        "http://127.0.0.1:8080/v1": world.openai_url,
        '"<token>"': repr(ALICE),
        "acme/tone@stable": f"{served.ref}@stable",
        "acme/tone@3": f"{served.ref}@1",
        "acme/memory": memory,
    }
    for old, new in replaced.items():
        assert old in snippet, f"the README's example no longer says {old}"
        snippet = snippet.replace(old, new)
    with world.client() as client:
        greedy = client.generate("Hello", f"{served.ref}@1", Sampling(32, stop_at_eos=True))
    exec(compile(snippet, "README.md", "exec"), {})
    assert capsys.readouterr().out.startswith(greedy.text)  # the streamed completion
