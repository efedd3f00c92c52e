"""The OpenAI-compatible API's pure parts: bodies → GenerateRequests, the chat templates,
and errors → HTTP statuses with Retry-After where a retry helps. (The whole API, with
OpenAI's client against real servers, is tests/client/test_openai.py.)"""

from __future__ import annotations

import json

import pytest

from mint.domain import errors
from mint.tokenizer import byte_tokenizer
from services.router.openai_api.chat import chat_prompt
from services.router.openai_api.errors import error_response
from services.router.openai_api.schema import ChatRequest, CompletionRequest, parse


def completion(**fields: object) -> CompletionRequest:
    return parse(CompletionRequest, json.dumps({"model": "acme/tone", "prompt": "hi", **fields}))


def test_a_body_becomes_the_generate_request_of_its_adapters_and_sampling() -> None:
    stack = {"adapters": [{"model": "acme/memory@3", "weight": 0.5}, {"model": "acme/x"}]}
    request = completion(model="acme/tone@stable", prompt=["hi"], mint=stack, top_p=0.9)
    a, b, c = request.generate_request().adapters
    assert (a.adapter, a.channel, a.weight) == ("acme/tone", "stable", 1.0)
    assert (b.adapter, b.revision, b.weight) == ("acme/memory", 3, 0.5)
    assert (c.adapter, c.WhichOneof("at")) == ("acme/x", None)  # the current view
    sampling = request.generate_request().sampling
    assert (sampling.max_new_tokens, sampling.temperature) == (16, 1.0)  # OpenAI's defaults
    assert sampling.stop_at_eos and sampling.top_p == pytest.approx(0.9)
    seeds = {completion().generate_request().sampling.seed for _ in range(3)}
    assert len(seeds) == 3, "sampled without a seed: a fresh one each time, as OpenAI"
    assert completion(temperature=0).generate_request().sampling.seed == 0


@pytest.mark.parametrize(
    ("fields", "said"),
    [
        ({"logprobs": 2}, "logprobs is not supported"),
        ({"logprobs": 0}, "logprobs is not supported"),  # 0: the sampled token's
        ({"frequency_penalty": 0.5}, "frequency_penalty is not supported"),
        ({"tools": []}, "tools is not supported"),
        ({"n": 2}, "n: Input should be 1"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"model": "acme"}, "model: 'acme' names no adapter"),
        ({"mint": {"adapters": [{"model": "x/y", "wait": 1}]}}, "mint.adapters.0.wait"),
    ],
)
def test_a_bad_body_is_invalid_argument_naming_the_field(fields: dict, said: str) -> None:
    with pytest.raises(errors.InvalidArgument, match=said):
        completion(**fields).generate_request()


def test_unimplemented_fields_with_values_that_change_nothing_are_taken() -> None:
    neutral: dict[str, object] = {"stop": None, "presence_penalty": 0.0, "logit_bias": {}}
    taken = completion(**neutral, frequency_penalty=0, echo=False, best_of=1)
    assert taken.generate_request().prompt == "hi"


def test_chat_uses_the_tokenizers_template_or_else_the_simple_one() -> None:
    body = {"model": "acme/tone", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "Hi"}, {"type": "text", "text": " there"}]}]}  # fmt: skip
    messages = parse(ChatRequest, json.dumps(body)).messages
    tokenizer = byte_tokenizer()
    assert chat_prompt(messages, tokenizer) == "user: Hi there\nassistant:"
    tokenizer.chat_template = (
        "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>{% endif %}"
    )
    assert chat_prompt(messages, tokenizer) == "<|user|>Hi there<|assistant|>"


@pytest.mark.parametrize(
    ("error", "status", "retry"),
    [
        (errors.Unauthenticated("unknown token"), 401, False),
        (errors.PermissionDenied("tenant"), 403, False),
        (errors.NotFound("no such adapter"), 404, False),
        (errors.InvalidArgument("prompt too long"), 400, False),
        (errors.FailedPrecondition("no node serves its base"), 400, False),
        (errors.ResourceExhausted("the node's queue is full"), 429, True),
        (errors.Unavailable("no node reporting"), 503, True),
        (errors.DeadlineExceeded("cold start: placement requested"), 503, True),
    ],
)
def test_errors_have_openais_shape_and_status(
    error: errors.DomainError, status: int, retry: bool
) -> None:
    response = error_response(error)
    body = json.loads(bytes(response.body))["error"]
    assert response.status_code == status and body["message"] == str(error)
    assert ("retry-after" in response.headers) == retry


def test_an_unexpected_error_says_nothing_of_its_internals() -> None:
    response = error_response(KeyError("secret detail"))
    assert response.status_code == 500 and b"secret" not in bytes(response.body)
