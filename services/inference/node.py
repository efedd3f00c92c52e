"""Request handling on a node: parse, check, resolve to exact revisions, then hand the
request to the scheduler, which leases its slot when it runs it in the continuous batch.
Nothing here loads an adapter: only residency intents do (reconciler)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from queue import SimpleQueue
from typing import TypeVar

from transformers import PreTrainedTokenizerFast

from mint.deadlines import time_left
from mint.serving.catalog import Catalog
from mint.serving.engine import NotResident, ServingEngine
from mint.serving.generation import Generation, OnToken
from mint.serving.requests import RevisionRef, Sampling, Selector
from mint.serving.scheduler import Scheduler

Parts = list[tuple[RevisionRef, float]]
T = TypeVar("T")
# Registers a callback to run when the call ends, whether it finished or the caller
# cancelled (gRPC's `context.add_callback`): it stops the generation at the next step.
OnCallEnd = Callable[[Callable[[], None]], object]


@dataclass(frozen=True)
class Completion:
    tokens: list[int]
    text: str
    parts: Parts
    batch_size: int
    prompt_tokens: list[int]


@dataclass(frozen=True)
class Streaming:
    """A generation under way: its resolved adapters and prompt at once, then its tokens."""

    parts: Parts
    prompt_tokens: list[int]
    tokens: Iterator[list[int]]


@dataclass(frozen=True)
class Scored:
    parts: Parts
    prompt_tokens: list[int]
    continuation_tokens: list[int]
    logprobs: list[float]


class InferenceNode:
    def __init__(
        self,
        name: str,
        engine: ServingEngine,
        catalog: Catalog,
        tokenizer: PreTrainedTokenizerFast,
        scheduler: Scheduler,
        on_miss: Callable[[], None] | None = None,
    ) -> None:
        self.name, self.engine, self.catalog = name, engine, catalog
        self.tokenizer, self.scheduler = tokenizer, scheduler
        self.on_miss = on_miss

    def resolve(self, selectors: list[Selector]) -> Parts:
        parts = [(self.catalog.resolve(s), s.weight) for s in selectors]
        for ref, _ in parts:
            self.engine.check_base(ref)
        return parts

    def encode(self, text: str) -> list[int]:
        ids: list[int] = self.tokenizer(text)["input_ids"]
        self.engine.check_prompt(ids)
        return ids

    def decode(self, tokens: list[int]) -> str:
        return str(self.tokenizer.decode(tokens, skip_special_tokens=True))

    def generate(
        self,
        selectors: list[Selector],
        prompt: str,
        sampling: Sampling,
        on_call_end: OnCallEnd | None = None,
    ) -> Completion:
        parts = self.resolve(selectors)
        prompt_ids = self.encode(prompt)
        generation = self._submit(parts, prompt_ids, sampling, on_call_end)
        out = generation.result()
        return Completion(out.tokens, self.decode(out.tokens), parts, out.batch_size, prompt_ids)

    def stream(
        self,
        selectors: list[Selector],
        prompt: str,
        sampling: Sampling,
        on_call_end: OnCallEnd | None = None,
    ) -> Streaming:
        """The resolved adapters now (errors raise here), then tokens as they decode. A
        reader that stops early cancels the generation."""
        parts = self.resolve(selectors)
        prompt_ids = self.encode(prompt)
        chunks: SimpleQueue[int | None] = SimpleQueue()
        generation = self._submit(parts, prompt_ids, sampling, on_call_end, chunks.put)
        generation.done.add_done_callback(lambda _: chunks.put(None))

        def tokens() -> Iterator[list[int]]:
            try:
                while (token := chunks.get()) is not None:
                    yield [token]
                generation.result()  # raises why it stopped early, if it did
            finally:
                generation.cancel()

        return Streaming(parts, prompt_ids, tokens())

    def score(self, selectors: list[Selector], prompt: str, continuation: str) -> Scored:
        parts = self.resolve(selectors)
        prompt_ids = self.encode(prompt)
        continuation_ids: list[int] = self.tokenizer(continuation)["input_ids"]
        lease = self._counting_misses(lambda: self.engine.acquire(parts))
        try:
            logprobs = self.engine.score(prompt_ids, continuation_ids, lease.slot)
        finally:
            self.engine.release(lease)
        return Scored(parts, prompt_ids, continuation_ids, logprobs)

    def _submit(
        self,
        parts: Parts,
        prompt_ids: list[int],
        sampling: Sampling,
        on_call_end: OnCallEnd | None,
        on_token: OnToken | None = None,
    ) -> Generation:
        """Queued with the caller's deadline (less the margin to answer in time)."""
        left = time_left(math.inf)
        deadline = None if left == math.inf else time.monotonic() + left
        generation = self._counting_misses(
            lambda: self.scheduler.submit(parts, prompt_ids, sampling, on_token, deadline)
        )
        if on_call_end is not None and on_call_end(generation.cancel) is False:
            generation.cancel()  # the call had already ended
        return generation

    def _counting_misses(self, call: Callable[[], T]) -> T:
        try:
            return call()
        except NotResident:  # counted, and the router goes elsewhere
            if self.on_miss is not None:
                self.on_miss()
            raise
