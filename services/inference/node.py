"""Request handling on a node: parse, check, resolve to exact revisions, lease the slot,
run in a batch. Nothing here loads an adapter: only residency intents do (reconciler)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from queue import Queue

from transformers import PreTrainedTokenizerFast

from mint.domain.errors import Unavailable
from mint.serving.batcher import Batcher
from mint.serving.catalog import Catalog
from mint.serving.engine import GenerationJob, Lease, ServingEngine
from mint.serving.requests import RevisionRef, Sampling, Selector

Parts = list[tuple[RevisionRef, float]]


@dataclass(frozen=True)
class Completion:
    tokens: list[int]
    text: str
    parts: Parts
    batch_size: int


class InferenceNode:
    def __init__(
        self,
        name: str,
        engine: ServingEngine,
        catalog: Catalog,
        tokenizer: PreTrainedTokenizerFast,
        batcher: Batcher,
        on_miss: Callable[[], None] | None = None,
    ) -> None:
        self.name, self.engine, self.catalog = name, engine, catalog
        self.tokenizer, self.batcher = tokenizer, batcher
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

    def generate(self, selectors: list[Selector], prompt: str, sampling: Sampling) -> Completion:
        parts, ids = self.resolve(selectors), self.encode(prompt)
        lease = self._acquire(parts)
        try:
            tokens, size = self.batcher.submit(GenerationJob(ids, lease.slot), sampling).result()
        finally:
            self.engine.release(lease)
        return Completion(tokens, self.decode(tokens), parts, size)

    def stream(
        self, selectors: list[Selector], prompt: str, sampling: Sampling
    ) -> tuple[Parts, Iterator[list[int]]]:
        """The resolved adapters now (errors raise here), then tokens as they decode.

        The slot is released when the batch finishes, not when the caller stops reading:
        a cancelled stream must not free a slot that the running batch still uses."""
        parts, ids = self.resolve(selectors), self.encode(prompt)
        lease = self._acquire(parts)
        chunks: Queue[list[int] | None] = Queue()
        try:
            done = self.batcher.submit(GenerationJob(ids, lease.slot, chunks.put), sampling)
        except BaseException:
            self.engine.release(lease)
            raise

        def finished(_: object) -> None:
            self.engine.release(lease)
            chunks.put(None)

        done.add_done_callback(finished)

        def tokens() -> Iterator[list[int]]:
            while (chunk := chunks.get()) is not None:
                yield chunk
            _raise_if_failed(done)

        return parts, tokens()

    def score(
        self, selectors: list[Selector], prompt: str, continuation: str
    ) -> tuple[Parts, list[float]]:
        parts = self.resolve(selectors)
        prompt_ids = self.encode(prompt)
        continuation_ids: list[int] = self.tokenizer(continuation)["input_ids"]
        lease = self._acquire(parts)
        try:
            return parts, self.engine.score(prompt_ids, continuation_ids, lease.slot)
        finally:
            self.engine.release(lease)

    def _acquire(self, parts: Parts) -> Lease:
        try:
            return self.engine.acquire(parts)
        except Unavailable:  # not resident here: counted, and the router goes elsewhere
            if self.on_miss is not None:
                self.on_miss()
            raise


def _raise_if_failed(done: Future[tuple[list[int], int]]) -> None:
    error = done.exception()
    if error is not None:
        raise error
