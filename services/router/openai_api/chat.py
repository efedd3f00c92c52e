"""Chat messages → one prompt.

With a tokenizer that carries a chat template (`tokenizer.chat_template`, Jinja, as
Hugging Face ships them), that template renders the conversation and opens the
assistant's turn. Otherwise (the byte tokenizer built in code has none) the simple
template: one line per message, `<role>: <content>`, then `assistant:` for the reply:

    system: You are terse.
    user: Hello
    assistant:
"""

from __future__ import annotations

from collections.abc import Sequence

from transformers import PreTrainedTokenizerFast

from .schema import ChatMessage

ASSISTANT_TURN = "assistant:"


def simple_template(messages: Sequence[ChatMessage]) -> str:
    return "".join(f"{m.role}: {m.text}\n" for m in messages) + ASSISTANT_TURN


def chat_prompt(messages: Sequence[ChatMessage], tokenizer: PreTrainedTokenizerFast) -> str:
    if not tokenizer.chat_template:
        return simple_template(messages)
    conversation = [{"role": m.role, "content": m.text} for m in messages]
    rendered = tokenizer.apply_chat_template(
        conversation, tokenize=False, add_generation_prompt=True
    )
    return str(rendered)
