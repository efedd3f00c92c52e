"""The bodies OpenAI's API answers with: a whole completion or chat completion, and the
chunks of a streamed one (server-sent events, ended by `data: [DONE]`)."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

from mint.v1 import inference_pb2 as pb

Kind = Literal["completion", "chat"]
Finish = Literal["stop", "length"]
DONE = "data: [DONE]\n\n"


def event(body: dict[str, Any]) -> str:
    return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"


def finish_reason(tokens: int, sampling: pb.Sampling) -> Finish:
    """`length` when the limit cut it, else it stopped at the end-of-sequence token."""
    return "length" if tokens >= sampling.max_new_tokens else "stop"


@dataclass(frozen=True)
class Reply:
    """One answer's identity; its methods give the bodies of either kind."""

    kind: Kind
    model: str
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    created: int = field(default_factory=lambda: int(time.time()))

    def whole(self, text: str, finish: Finish) -> dict[str, Any]:
        if self.kind == "completion":
            return self._text(text, finish)
        message = {"role": "assistant", "content": text}
        choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": finish}
        return self._body("chat.completion", choice)

    def opening(self) -> dict[str, Any] | None:
        """A chat stream's first chunk says who speaks; a completion's has no such chunk."""
        if self.kind == "completion":
            return None
        return self._chunk({"role": "assistant", "content": ""}, None)

    def piece(self, text: str) -> dict[str, Any]:
        if self.kind == "completion":
            return self._text(text, None)
        return self._chunk({"content": text}, None)

    def closing(self, finish: Finish) -> dict[str, Any]:
        if self.kind == "completion":
            return self._text("", finish)
        return self._chunk({}, finish)

    def _text(self, text: str, finish: Finish | None) -> dict[str, Any]:
        choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish}
        return self._body("text_completion", choice)

    def _chunk(self, delta: dict[str, str], finish: Finish | None) -> dict[str, Any]:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return self._body("chat.completion.chunk", choice)

    def _body(self, kind: str, choice: dict[str, Any]) -> dict[str, Any]:
        prefix = "cmpl" if self.kind == "completion" else "chatcmpl"
        return {
            "id": f"{prefix}-{self.id}",
            "object": kind,
            "created": self.created,
            "model": self.model,
            "choices": [choice],
        }
