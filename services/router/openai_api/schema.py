"""What the OpenAI-compatible endpoints accept, and the `GenerateRequest` each becomes.

`model` names an adapter as the other clients do: `tenant/name` (its current view),
`tenant/name@channel` or `tenant/name@<revision>`. More adapters stack through the extra
body field `mint`: `{"adapters": [{"model": "acme/memory@3", "weight": 0.5}]}` (after
`model`, which has weight 1; at most four in all). Fields that would change the output in
ways MinT does not implement (`stop`, `logprobs`, `n` > 1, penalties, tools ...) are
refused rather than ignored; sent with the value that changes nothing (as some clients
send every field), they are taken.
"""

from __future__ import annotations

import secrets
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from mint.client.types import Selector
from mint.domain.errors import InvalidArgument
from mint.serving.requests import MAX_NEW_TOKENS
from mint.v1 import inference_pb2 as pb

COMPLETION_MAX_TOKENS = 16  # OpenAI's default for completions
CHAT_MAX_TOKENS = MAX_NEW_TOKENS  # chat has no default limit: the most a node generates
MaxTokens = Annotated[int, Field(ge=1, le=MAX_NEW_TOKENS)]
M = TypeVar("M", bound=BaseModel)
# OpenAI's fields MinT does not implement, and the values of each that change nothing.
NEUTRAL: dict[str, tuple[Any, ...]] = {
    "stop": (None, [], ""),
    "presence_penalty": (None, 0),
    "frequency_penalty": (None, 0),
    "logit_bias": (None, {}),
    "logprobs": (None, False),
    "top_logprobs": (None, 0),
    "echo": (None, False),
    "best_of": (None, 1),
    "suffix": (None, ""),
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StackedAdapter(_Strict):
    model: str
    weight: float = 1.0


class MintOptions(_Strict):
    adapters: list[StackedAdapter] = []


class _Generation(_Strict):
    model: str
    max_tokens: MaxTokens | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None  # None: 1, as OpenAI
    top_p: Annotated[float, Field(gt=0, le=1)] | None = None
    seed: Annotated[int, Field(ge=0, lt=2**63)] | None = None  # None: a random one
    stream: bool | None = False
    stream_options: dict[str, Any] | None = None  # accepted; no usage is reported
    n: Literal[1] | None = 1
    user: str | None = None  # accepted and unused
    mint: MintOptions | None = None

    @model_validator(mode="before")
    @classmethod
    def _take_neutral_values(cls, body: Any) -> Any:
        """Unimplemented fields pass only with a value that changes nothing, and are then
        dropped (an InvalidArgument is not a ValueError: pydantic lets it through)."""
        if not isinstance(body, dict):
            return body
        for field, neutral in NEUTRAL.items():
            if field in body and not _is_neutral(body[field], neutral):
                raise InvalidArgument(
                    f"invalid request body: {field} is not supported here; leave it out"
                )
        return {k: v for k, v in body.items() if k not in NEUTRAL}

    def selectors(self) -> list[pb.AdapterSelector]:
        stacked = self.mint.adapters if self.mint else []
        return [_selector("model", self.model, 1.0)] + [
            _selector(f"mint.adapters.{i}.model", a.model, a.weight) for i, a in enumerate(stacked)
        ]

    def sampling(self, default_max_tokens: int) -> pb.Sampling:
        temperature = 1.0 if self.temperature is None else self.temperature
        seed = self.seed
        if seed is None:  # OpenAI samples afresh each time; greedy needs no seed
            seed = secrets.randbits(63) if temperature > 0 else 0
        return pb.Sampling(
            max_new_tokens=self.max_tokens or default_max_tokens,
            temperature=temperature,
            top_p=self.top_p,
            seed=seed,
            stop_at_eos=True,
        )


class CompletionRequest(_Generation):
    prompt: str | Annotated[list[str], Field(min_length=1, max_length=1)]

    def generate_request(self) -> pb.GenerateRequest:
        prompt = self.prompt if isinstance(self.prompt, str) else self.prompt[0]
        return pb.GenerateRequest(
            adapters=self.selectors(),
            prompt=prompt,
            sampling=self.sampling(COMPLETION_MAX_TOKENS),
        )


class TextPart(_Strict):
    type: Literal["text"]
    text: str


class ChatMessage(_Strict):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]
    name: str | None = None  # accepted; the template does not use it

    @property
    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class ChatRequest(_Generation):
    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    max_completion_tokens: MaxTokens | None = None  # the newer name of max_tokens

    def generate_request(self, prompt: str) -> pb.GenerateRequest:
        sampling = self.sampling(CHAT_MAX_TOKENS)
        if self.max_completion_tokens is not None:
            sampling.max_new_tokens = self.max_completion_tokens
        return pb.GenerateRequest(adapters=self.selectors(), prompt=prompt, sampling=sampling)


def parse(model: type[M], body: bytes | str) -> M:
    """The request body as `model`; InvalidArgument saying which fields are wrong."""
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        problems = "; ".join(_problem(e) for e in exc.errors(include_url=False)[:5])
        raise InvalidArgument(f"invalid request body: {problems}") from None


def _is_neutral(value: Any, neutral: tuple[Any, ...]) -> bool:
    """0.0 counts as 0, but 0 not as False (`logprobs: 0` asks for log-probabilities)."""
    return any(value == v and isinstance(value, bool) == isinstance(v, bool) for v in neutral)


def _problem(error: Any) -> str:
    where = ".".join(str(p) for p in error["loc"]) or "body"
    if error["type"] == "extra_forbidden":
        return f"{where} is not supported here; leave it out"
    return f"{where}: {error['msg']}"


def _selector(field: str, text: str, weight: float) -> pb.AdapterSelector:
    try:
        parsed = Selector.parse(text)
    except ValueError as exc:
        raise InvalidArgument(f"{field}: {exc}") from None
    selector = pb.AdapterSelector(adapter=parsed.adapter, weight=weight)
    if parsed.revision is not None:
        selector.revision = parsed.revision
    elif parsed.channel is not None:
        selector.channel = parsed.channel
    return selector
