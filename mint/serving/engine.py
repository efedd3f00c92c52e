"""A node's serving engine: the packed model, which revisions sit in which slots, and the
forward passes. Requests arrive already resolved to exact revisions.

Locks: `_table` guards the slot table (admit, evict, leases); `_run` serialises forward
passes (torch already uses every core for one). Loading copies into free slots while a
batch runs: the table never hands out a slot that a running batch holds.

The table calls back on every eviction (a load's or a stack's room, or an explicit one),
and the engine then clears the slot and forgets the weights: what the node reports
resident is exactly what the table holds.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from mint.domain.errors import FailedPrecondition, InvalidArgument, ResourceExhausted, Unavailable

from .generate import generate
from .packed_model import LoraWeights, PackedLoraModel
from .requests import RevisionRef, Sampling
from .residency import ResidentKey, SlotTable

OnTokens = Callable[[list[int]], None]


def key_of(ref: RevisionRef) -> ResidentKey:
    return ResidentKey(ref.adapter_id, ref.revision)


def weights_bytes(weights: LoraWeights) -> int:
    return sum(a.nbytes + b.nbytes for a, b, _ in weights.modules.values())


@dataclass(frozen=True)
class Lease:
    """Slot `slot` held for one request (0: the bare base); released by the engine."""

    slot: int
    key: ResidentKey | None


@dataclass
class GenerationJob:
    prompt_ids: list[int]
    slot: int
    on_tokens: OnTokens | None = None


class ServingEngine:
    def __init__(
        self,
        model: PackedLoraModel,
        table: SlotTable,
        base_fingerprint: str,
        max_prompt_tokens: int,
        pad_token_id: int,
        eos_token_id: int,
        tokenizer_fingerprint: str = "",
    ) -> None:
        self.model = model
        self.table = table
        self.base_fingerprint = base_fingerprint
        self.max_prompt_tokens = max_prompt_tokens
        self.tokenizer_fingerprint = tokenizer_fingerprint  # what max_prompt_tokens counts
        self.pad_token_id, self.eos_token_id = pad_token_id, eos_token_id
        first = next(iter(model.layers.values())).slots
        self.max_rank, self.model_device = first.max_rank, first.A.device
        if table.on_evict is not None:
            raise ValueError("this slot table already belongs to another engine")
        table.on_evict = self._on_evict
        self._refs: dict[ResidentKey, RevisionRef] = {}
        self._weights: dict[ResidentKey, LoraWeights] = {}  # kept to build stacks from
        self._stacks: dict[ResidentKey, tuple[ResidentKey, ...]] = {}
        self._table = threading.RLock()
        self._loaded = threading.Condition(self._table)
        self._evicted: list[RevisionRef] = []  # not yet taken by `take_evicted`
        self.servable_at: dict[ResidentKey, float] = {}  # perf_counter() when loaded
        self._run = threading.Lock()

    # residency ---------------------------------------------------------------------

    def load(self, ref: RevisionRef, weights: LoraWeights, pinned: bool = False) -> None:
        """Make `ref` resident, evicting the least recently used for room (`take_evicted`
        tells which). If it cannot, nothing changed."""
        self.check_base(ref)
        if weights.rank > self.max_rank:
            raise InvalidArgument(
                f"{ref.label} has rank {weights.rank}; this node serves ranks up to {self.max_rank}"
            )
        key = key_of(ref)
        with self._table:
            if key in self.table:
                return
            slot, _ = self.table.admit(key, weights_bytes(weights), pinned)
            self._fill(key, slot, weights)
            self._refs[key], self._weights[key] = ref, weights
            self.servable_at[key] = time.perf_counter()
            self._loaded.notify_all()

    def take_evicted(self) -> list[RevisionRef]:
        """The revisions evicted since the last call, for whatever reason."""
        with self._table:
            evicted, self._evicted = self._evicted, []
        return evicted

    def evict(self, ref: RevisionRef) -> bool:
        """False if it is not resident or a running batch holds it (try again later)."""
        key = key_of(ref)
        with self._table:
            if key not in self.table:
                return False
            try:
                self.table.evict(key)
            except ResourceExhausted:  # in use by a running batch
                return False
            for stack in [s for s, parts in self._stacks.items() if key in parts]:
                self._evict_stack(stack)
        return True

    def resident(self) -> list[RevisionRef]:
        with self._table:
            return sorted(self._refs.values())

    def resident_by_key(self) -> dict[ResidentKey, RevisionRef]:
        """`resident`, unsorted: for callers on a hot path."""
        with self._table:
            return dict(self._refs)

    def is_resident(self, ref: RevisionRef) -> bool:
        with self._table:
            return key_of(ref) in self._refs

    def wait_resident(self, ref: RevisionRef, timeout_s: float) -> bool:
        """Block until `ref` is resident (True) or `timeout_s` passes (False)."""
        with self._loaded:
            return self._loaded.wait_for(lambda: key_of(ref) in self._refs, timeout_s)

    @property
    def used_bytes(self) -> int:
        with self._table:
            return self.table.used_bytes

    def check_base(self, ref: RevisionRef) -> None:
        if ref.base_fingerprint and ref.base_fingerprint != self.base_fingerprint:
            raise FailedPrecondition(
                f"{ref.label} was trained on base {ref.base_fingerprint[:12]}…, but this node "
                f"serves base {self.base_fingerprint[:12]}…"
            )

    # requests ------------------------------------------------------------------------

    @contextmanager
    def lease(self, parts: Sequence[tuple[RevisionRef, float]]) -> Iterator[Lease]:
        """Hold the slot serving `parts` (one adapter, or a weighted stack built once and
        cached) for the duration of the block. Unavailable if a part is not resident."""
        lease = self.acquire(parts)
        try:
            yield lease
        finally:
            self.release(lease)

    def release(self, lease: Lease) -> None:
        if lease.key is not None:
            with self._table:
                self.table.release(lease.key)

    def acquire(self, parts: Sequence[tuple[RevisionRef, float]]) -> Lease:
        """`lease` for callers that release elsewhere (when a streamed batch ends)."""
        for ref, _ in parts:
            self.check_base(ref)
        with self._table:
            missing = [r.label for r, _ in parts if key_of(r) not in self._refs]
            if missing:
                raise Unavailable(f"not resident on this node: {', '.join(missing)}")
            if not parts:
                return Lease(0, None)
            if len(parts) == 1 and parts[0][1] == 1.0:
                key = key_of(parts[0][0])
            else:
                key = self._stack(parts)
            return Lease(self.table.acquire(key), key)

    def _stack(self, parts: Sequence[tuple[RevisionRef, float]]) -> ResidentKey:
        keys = tuple(key_of(r) for r, _ in parts)
        label = ";".join(
            f"{k.adapter_id}@{k.revision}*{w!r}" for k, (_, w) in zip(keys, parts, strict=True)
        )
        key = ResidentKey("stack:" + hashlib.sha256(label.encode()).hexdigest()[:32], 0)
        if key in self.table:
            return key
        weights = LoraWeights.stack(
            [(self._weights[k], w) for k, (_, w) in zip(keys, parts, strict=True)]
        )
        if weights.rank > self.max_rank:
            raise InvalidArgument(
                f"the stacked adapters have rank {weights.rank} together; "
                f"this node serves ranks up to {self.max_rank}"
            )
        for part in keys:  # its own parts are not the room it is built in
            self.table.acquire(part)
        try:
            slot, _ = self.table.admit(key, weights_bytes(weights))
        finally:
            for part in keys:
                self.table.release(part)
        self._fill(key, slot, weights)
        self._stacks[key] = keys
        return key

    def _fill(self, key: ResidentKey, slot: int, weights: LoraWeights) -> None:
        """Copy into the slot just admitted for `key`; if that fails, give the slot back."""
        try:
            self.model.load(slot, weights)
        except BaseException:
            self.table.evict(key)
            raise

    def _on_evict(self, key: ResidentKey, slot: int) -> None:
        """The table let `key` go (under `_table`): clear its slot and forget it."""
        self.model.clear(slot)
        self._stacks.pop(key, None)
        self.servable_at.pop(key, None)
        self._weights.pop(key, None)
        ref = self._refs.pop(key, None)
        if ref is not None:
            self._evicted.append(ref)

    def _evict_stack(self, key: ResidentKey) -> None:
        try:
            self.table.evict(key)
        except ResourceExhausted:  # in use: the LRU takes it later
            return

    def check_prompt(self, prompt_ids: list[int]) -> None:
        if not prompt_ids:
            raise InvalidArgument("the prompt is empty")
        if len(prompt_ids) > self.max_prompt_tokens:
            raise InvalidArgument(
                f"the prompt has {len(prompt_ids)} tokens; this node accepts at most "
                f"{self.max_prompt_tokens}"
            )

    @torch.no_grad()
    def generate(
        self, jobs: Sequence[GenerationJob], sampling: Sampling | Sequence[Sampling]
    ) -> list[list[int]]:
        """One batch, one forward pass per step: each job with its own slot, and its own
        sampling if `sampling` is a sequence (same max_new_tokens and stop_at_eos)."""
        rows = [sampling] * len(jobs) if isinstance(sampling, Sampling) else list(sampling)
        if len({row.stop_at_eos for row in rows}) != 1:
            raise ValueError("one batch stops at EOS for every sample or for none")
        width = max(len(j.prompt_ids) for j in jobs)
        ids = torch.full((len(jobs), width), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(jobs), width), dtype=torch.long)
        for i, job in enumerate(jobs):  # left padding: every prompt ends at the same column
            ids[i, width - len(job.prompt_ids) :] = torch.tensor(job.prompt_ids)
            mask[i, width - len(job.prompt_ids) :] = 1
        slots = torch.tensor([j.slot for j in jobs], dtype=torch.long)
        eos = self.eos_token_id if rows[0].stop_at_eos else None
        streamer = _Streamer(jobs, eos) if any(j.on_tokens for j in jobs) else None
        with self._run:
            out = generate(self.model, ids, mask, slots, rows, eos, self.pad_token_id, streamer)
        return [_until_eos(row.tolist(), eos) for row in out]

    @torch.no_grad()
    def score(self, prompt_ids: list[int], continuation_ids: list[int], slot: int) -> list[float]:
        """log p(continuation token | everything before it), one per continuation token."""
        if not continuation_ids:
            raise InvalidArgument("the continuation is empty")
        self.check_prompt(prompt_ids + continuation_ids)
        ids = torch.tensor([prompt_ids + continuation_ids])
        with self._run:
            logits = self.model(ids, torch.tensor([slot]))
        logprobs = torch.log_softmax(logits[0, len(prompt_ids) - 1 : -1].float(), dim=-1)
        picked = logprobs.gather(1, torch.tensor(continuation_ids)[:, None])[:, 0]
        return [float(x) for x in picked]


def _until_eos(tokens: list[int], eos: int | None) -> list[int]:
    return tokens[: tokens.index(eos) + 1] if eos is not None and eos in tokens else tokens


class _Streamer:
    """transformers' streamer protocol: the prompt first, then each step's tokens [batch]."""

    def __init__(self, jobs: Sequence[GenerationJob], eos: int | None) -> None:
        self.jobs, self.eos = jobs, eos
        self.seen_prompt = False
        self.done = [False] * len(jobs)

    def put(self, value: torch.Tensor) -> None:
        if not self.seen_prompt:
            self.seen_prompt = True
            return
        for i, token in enumerate(value.reshape(len(self.jobs), -1)[:, -1].tolist()):
            job = self.jobs[i]
            if self.done[i] or job.on_tokens is None:
                continue
            job.on_tokens([token])
            self.done[i] = token == self.eos

    def end(self) -> None:
        pass
