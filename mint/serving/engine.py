"""A node's serving engine: the packed model, which revisions it holds in host memory and
which of them sit in device slots, and the forward passes. Requests arrive already
resolved to exact revisions.

Two tiers, each with its own byte budget. The host tier (`HostTier`) holds the weights of
every revision the node holds, in the serving dtype (pinned on CUDA); leaving it is
leaving the node (`take_evicted` reports it). The device slots (`SlotTable`) are a
working set drawn from it: a request for a revision without a slot copies it into one (a
promotion), and the least recently used slot's revision simply stays in host memory.
A lease is released only once its batch's outputs were read back to the host, so no
kernel still reads a slot when it is cleared or rewritten.

Locks: `_table` guards both tiers (admit, evict, leases); `_run` serialises forward
passes (torch already uses every core for one). Loads parse and convert their weights
before taking `_table`, and never take `_run`: a slot is written while a batch runs, and
the table never hands out a slot that a running batch holds.
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

from .device import SlotWrites, dtype_name
from .host_tier import HostTier
from .packed_model import LoraWeights, PackedLoraModel
from .requests import RevisionRef
from .residency import ResidentKey, SlotTable


class NotResident(Unavailable):
    """A request names a revision this node does not hold (the router goes elsewhere)."""


def key_of(ref: RevisionRef) -> ResidentKey:
    return ResidentKey(ref.adapter_id, ref.revision)


def weights_bytes(weights: LoraWeights) -> int:
    return weights.nbytes


@dataclass(frozen=True)
class Lease:
    """Slot `slot` held for one request (0: the bare base); released by the engine."""

    slot: int
    key: ResidentKey | None


@dataclass(frozen=True)
class Held:
    """A revision in the host tier: what it is, and its weights as the slots take them."""

    ref: RevisionRef
    weights: LoraWeights


@dataclass(frozen=True)
class TierUsage:
    tier: str  # "device" (the slots) or "host"
    budget_bytes: int
    used_bytes: int
    adapters: int  # in the device tier, weighted stacks count too
    slots: int = 0  # the device tier's slot count (slot 0, the bare base, not counted)


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
        host_budget_bytes: int | None = None,
        on_promote: Callable[[], None] | None = None,
    ) -> None:
        """`host_budget_bytes`: the host tier's budget (default the device slots' budget);
        never below it, since every revision in a slot is held in host memory too.
        `on_promote` is called when a request copies a revision from host memory into a
        slot."""
        self.model = model
        self.table = table
        self.base_fingerprint = base_fingerprint
        self.max_prompt_tokens = max_prompt_tokens
        self.tokenizer_fingerprint = tokenizer_fingerprint  # what max_prompt_tokens counts
        self.pad_token_id, self.eos_token_id = pad_token_id, eos_token_id
        first = next(iter(model.layers.values())).slots
        self.max_rank = first.max_rank
        self.model_device, self.model_dtype = first.A.device, first.A.dtype
        host_budget = table.budget_bytes if host_budget_bytes is None else host_budget_bytes
        if host_budget < table.budget_bytes:
            raise ValueError(
                f"the host memory budget ({host_budget:,} bytes) is below the device slots' "
                f"({table.budget_bytes:,}): every adapter in a slot is held in host memory "
                "too, so raise the host budget or lower the device one"
            )
        if table.on_evict is not None:
            raise ValueError("this slot table already belongs to another engine")
        table.on_evict = self._on_evict
        self.host: HostTier[Held] = HostTier(host_budget)
        self.on_promote = on_promote
        self._writes = SlotWrites(self.model_device)
        self._stacks: dict[ResidentKey, tuple[ResidentKey, ...]] = {}
        self._table = threading.RLock()
        self._loaded = threading.Condition(self._table)
        self._evicted: list[RevisionRef] = []  # not yet taken by `take_evicted`
        self.servable_at: dict[ResidentKey, float] = {}  # perf_counter() when loaded
        self._run = threading.Lock()

    # residency ---------------------------------------------------------------------

    def load(self, ref: RevisionRef, weights: LoraWeights, pinned: bool = False) -> None:
        """Make `ref` resident: held in host memory, evicting the least recently used
        revisions from the node for room (`take_evicted` tells which), and copied into a
        device slot unless every slot is busy. If it cannot fit, nothing changed."""
        self.check_base(ref)
        if weights.rank > self.max_rank:
            raise InvalidArgument(
                f"{ref.label} has rank {weights.rank}; this node serves ranks up to {self.max_rank}"
            )
        key = key_of(ref)
        if self.is_resident(ref):
            return
        held = Held(ref, weights.to_host(self.model_dtype, pin=self._pins))  # no lock held
        nbytes = held.weights.nbytes
        if nbytes > self.table.budget_bytes:
            raise ResourceExhausted(
                f"{ref.label} takes {nbytes:,} bytes in {dtype_name(self.model_dtype)}, more "
                f"than the node's device slot budget of {self.table.budget_bytes:,}"
            )
        with self._table:
            if key in self.host:
                return
            for victim in self.host.victims_for(nbytes, self._busy):
                self._leave(victim)
            self.host.add(key, held, nbytes, pinned)
            try:
                self._promote(key)
            except ResourceExhausted:  # every slot busy: promoted when a request comes
                pass
            except BaseException:
                self.host.remove(key)
                raise
            self.servable_at[key] = time.perf_counter()
            self._loaded.notify_all()

    @property
    def _pins(self) -> bool:
        return self.model_device.type == "cuda"

    def take_evicted(self) -> list[RevisionRef]:
        """The revisions that left the node since the last call, for whatever reason."""
        with self._table:
            evicted, self._evicted = self._evicted, []
        return evicted

    def evict(self, ref: RevisionRef) -> bool:
        """False if it is not resident or a running batch holds it (try again later)."""
        key = key_of(ref)
        with self._table:
            if key not in self.host or self._busy(key):
                return False
            self._leave(key)
        return True

    def resident(self) -> list[RevisionRef]:
        return sorted(self.resident_by_key().values())

    def resident_by_key(self) -> dict[ResidentKey, RevisionRef]:
        """`resident`, unsorted: for callers on a hot path."""
        with self._table:
            return {key: self.host.get(key).ref for key in self.host}

    def in_device(self) -> list[RevisionRef]:
        """The resident revisions that have a device slot now."""
        with self._table:
            return sorted(self.host.get(k).ref for k in self.host if k in self.table)

    def is_resident(self, ref: RevisionRef) -> bool:
        with self._table:
            return key_of(ref) in self.host

    def wait_resident(self, ref: RevisionRef, timeout_s: float) -> bool:
        """Block until `ref` is resident (True) or `timeout_s` passes (False)."""
        with self._loaded:
            return self._loaded.wait_for(lambda: key_of(ref) in self.host, timeout_s)

    def tiers(self) -> list[TierUsage]:
        with self._table:
            table, host = self.table, self.host
            return [
                TierUsage(
                    "device", table.budget_bytes, table.used_bytes, len(table), table.capacity
                ),
                TierUsage("host", host.budget_bytes, host.used_bytes, len(host)),
            ]

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
        """`lease` for callers that release elsewhere (when a streamed batch ends). A
        resident revision without a device slot is copied into one first;
        ResourceExhausted if every slot is held by running batches or pinned."""
        for ref, _ in parts:
            self.check_base(ref)
        with self._table:
            missing = [r.label for r, _ in parts if key_of(r) not in self.host]
            if missing:
                raise NotResident(f"not resident on this node: {', '.join(missing)}")
            if not parts:
                return Lease(0, None)
            for ref, _ in parts:
                self.host.touch(key_of(ref))
            if len(parts) == 1 and parts[0][1] == 1.0:
                key = key_of(parts[0][0])
                if self._promote(key) and self.on_promote is not None:
                    self.on_promote()
            else:
                key = self._stack(parts)
            return Lease(self.table.acquire(key), key)

    def _promote(self, key: ResidentKey) -> bool:
        """Give host-resident `key` a device slot if it has none (True if it had none):
        the least recently used slots make room, and their revisions stay in host memory."""
        if self.table.slot_of(key) is not None:
            return False
        held = self.host.get(key)
        slot, _ = self.table.admit(key, held.weights.nbytes, self.host.pinned(key))
        self._fill(key, slot, held.weights)
        return True

    def _stack(self, parts: Sequence[tuple[RevisionRef, float]]) -> ResidentKey:
        """A slot for the weighted stack, built from the parts' host copies (the parts
        need no slots of their own) once, and cached in the device tier."""
        keys = tuple(key_of(r) for r, _ in parts)
        label = ";".join(
            f"{k.adapter_id}@{k.revision}*{w!r}" for k, (_, w) in zip(keys, parts, strict=True)
        )
        key = ResidentKey("stack:" + hashlib.sha256(label.encode()).hexdigest()[:32], 0)
        if key in self.table:
            return key
        weights = LoraWeights.stack(
            [(self.host.get(k).weights, w) for k, (_, w) in zip(keys, parts, strict=True)]
        )
        if weights.rank > self.max_rank:
            raise InvalidArgument(
                f"the stacked adapters have rank {weights.rank} together; "
                f"this node serves ranks up to {self.max_rank}"
            )
        slot, _ = self.table.admit(key, weights.nbytes)
        self._fill(key, slot, weights)
        self._stacks[key] = keys
        return key

    def _fill(self, key: ResidentKey, slot: int, weights: LoraWeights) -> None:
        """Copy into the slot just admitted for `key`; if that fails, give the slot back."""
        try:
            with self._writes.ordered():
                self.model.load(slot, weights)
        except BaseException:
            self.table.evict(key)
            raise

    def _busy(self, key: ResidentKey) -> bool:
        return self.table.in_use(key) > 0

    def _leave(self, key: ResidentKey) -> None:
        """`key` leaves the node (under `_table`, not busy): its slot, the stacks built
        from it, its host copy."""
        if key in self.table:
            self.table.evict(key)
        for stack in [s for s, parts in self._stacks.items() if key in parts]:
            self._evict_stack(stack)
        held = self.host.remove(key)
        self.servable_at.pop(key, None)
        self._evicted.append(held.ref)

    def _on_evict(self, key: ResidentKey, slot: int) -> None:
        """The slot table let `key` go (under `_table`): clear its slot. A revision stays
        in host memory (resident) until `_leave`; a stack is gone."""
        with self._writes.ordered():
            self.model.clear(slot)
        self._stacks.pop(key, None)

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

    @contextmanager
    def model_pass(self) -> Iterator[PackedLoraModel]:
        """The model for one forward pass at a time: the scheduler's steps and `score`
        share it, and the slots a pass applies are set on the model for its duration."""
        with self._run, torch.no_grad():
            yield self.model

    @torch.no_grad()
    def score(self, prompt_ids: list[int], continuation_ids: list[int], slot: int) -> list[float]:
        """log p(continuation token | everything before it), one per continuation token."""
        if not continuation_ids:
            raise InvalidArgument("the continuation is empty")
        self.check_prompt(prompt_ids + continuation_ids)
        ids = torch.tensor([prompt_ids + continuation_ids], device=self.model_device)
        with self._run:
            logits = self.model(ids, torch.tensor([slot], device=self.model_device))
        logprobs = torch.log_softmax(logits[0, len(prompt_ids) - 1 : -1].float(), dim=-1)
        picked = logprobs.gather(1, ids[0, len(prompt_ids) :, None])[:, 0]
        return [float(x) for x in picked.tolist()]  # read back before the lease goes
