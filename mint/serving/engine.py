"""A node's serving engine: the packed model, which revisions it holds in host memory and
which of them sit in device slots, and the forward passes. Requests arrive already
resolved to exact revisions.

Two tiers, each with its own byte budget. The host tier (`HostTier`) holds the weights of
every revision the node holds, in the serving dtype (pinned on CUDA); leaving it is
leaving the node (`take_evicted` reports it). The device slots (`SlotTable`) are a
working set drawn from it: a request for a revision without a slot copies it into one (a
promotion), and the least recently used slot's revision simply stays in host memory.
Slots come in rank classes (`rank_classes`): a revision, or a weighted stack, takes a
slot of the smallest class that fits its rank and can make room, and the device budget
counts what that slot takes. A request first holds its revisions (`hold`: they cannot
leave the node, nothing is copied) and takes a slot only when it runs (`take_slot`), so
waiting requests hold no slots. A lease is released only once its batch's outputs were
read back to the host, so no kernel still reads a slot when it is cleared or rewritten.

Locks: `_table` guards both tiers (admit, evict, leases); `_run` serialises forward
passes (torch already uses every core for one). Loads parse and convert their weights
before taking `_table`, copy them into a slot under it and only then wait for their hash
(computed meanwhile on another core), so the copy hides the hash; they never take
`_run`: a slot is written while a batch runs, and the table never hands out a slot that a
running batch holds.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch

from mint.domain.errors import FailedPrecondition, InvalidArgument, ResourceExhausted

from .device import SlotWrites, dtype_name
from .host_tier import HostTier
from .leases import (
    ClassUsage,
    Held,
    Hold,
    Lease,
    NotResident,
    Parts,
    TierUsage,
    key_of,
    stack_key,
    weights_bytes,
)
from .packed_model import LoraWeights, PackedLoraModel
from .requests import RevisionRef
from .residency import ResidentKey, SlotTable

__all__ = [
    "ClassUsage",
    "Hold",
    "Lease",
    "NotResident",
    "ServingEngine",
    "TierUsage",
    "key_of",
    "stack_key",
    "weights_bytes",
]


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
        self.layout = model.layout
        self.max_rank = self.layout.max_rank
        self.model_device, self.model_dtype = model.device, model.dtype
        if table.sizes != self.layout.sizes:
            raise ValueError(
                f"the slot table's classes have {table.sizes} slots, the model's "
                f"{self.layout.sizes}: build it as SlotTable(model.layout.sizes, …)"
            )
        self.slot_bytes = [model.slot_bytes(i) for i in range(len(self.layout.classes))]
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
        self._holds: Counter[ResidentKey] = Counter()  # requests holding each revision
        self._table = threading.RLock()
        self._loaded = threading.Condition(self._table)
        self._evicted: list[RevisionRef] = []  # not yet taken by `take_evicted`
        self.servable_at: dict[ResidentKey, float] = {}  # perf_counter() when loaded
        self._run = threading.Lock()

    # residency ---------------------------------------------------------------------

    def load(
        self,
        ref: RevisionRef,
        weights: LoraWeights,
        pinned: bool = False,
        verify: Callable[[], None] | None = None,
    ) -> None:
        """Make `ref` resident: held in host memory, evicting the least recently used
        revisions from the node for room (`take_evicted` tells which), and copied into a
        device slot unless every slot is busy. If it cannot fit, nothing changed.
        `verify` (the weights' hash check, computed meanwhile) is called once they are
        copied and before any request can see them; if it raises, they are taken out
        again (the revisions evicted for room stay evicted)."""
        self.check_base(ref)
        if weights.rank > self.max_rank:
            raise InvalidArgument(
                f"{ref.label} has rank {weights.rank}; this node serves ranks up to {self.max_rank}"
            )
        key = key_of(ref)
        if self.is_resident(ref):
            return
        rank_class = self.layout.fitting(weights.rank)[0]
        if self.slot_bytes[rank_class] > self.table.budget_bytes:
            raise ResourceExhausted(
                f"{ref.label} takes {self.slot_bytes[rank_class]:,} bytes in a slot of rank "
                f"{self.layout.classes[rank_class].rank} in {dtype_name(self.model_dtype)}, "
                f"more than the node's device slot budget of {self.table.budget_bytes:,}"
            )
        held = Held(ref, weights.to_host(self.model_dtype, pin=self._pins))  # no lock held
        nbytes = held.weights.nbytes
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
            if verify is not None:
                try:
                    verify()  # under the lock: nobody saw the weights before it returns
                except BaseException:
                    if key in self.table:
                        self.table.evict(key)
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

    def rank_classes(self) -> list[ClassUsage]:
        with self._table:
            return [
                ClassUsage(c.rank, c.slots, *self.table.class_usage(i), self.slot_bytes[i])
                for i, c in enumerate(self.layout.classes)
            ]

    def check_base(self, ref: RevisionRef) -> None:
        if ref.base_fingerprint and ref.base_fingerprint != self.base_fingerprint:
            raise FailedPrecondition(
                f"{ref.label} was trained on base {ref.base_fingerprint[:12]}…, but this node "
                f"serves base {self.base_fingerprint[:12]}…"
            )

    # requests ------------------------------------------------------------------------

    @contextmanager
    def lease(self, parts: Parts) -> Iterator[Lease]:
        """Hold the slot serving `parts` (one adapter, or a weighted stack built once and
        cached) for the duration of the block. Unavailable if a part is not resident."""
        lease = self.acquire(parts)
        try:
            yield lease
        finally:
            self.release(lease)

    def acquire(self, parts: Parts) -> Lease:
        """`hold` and `take_slot` at once, for callers that release elsewhere."""
        hold = self.hold(parts)
        try:
            return self.take_slot(hold)
        except BaseException:
            self.drop(hold)
            raise

    def hold(self, parts: Parts) -> Hold:
        """Keep `parts` resident (not evicted, nothing copied) until `drop`, or the
        `release` of a lease taken for it. NotResident if a part is not resident,
        InvalidArgument if a stack of them exceeds the largest rank served."""
        for ref, _ in parts:
            self.check_base(ref)
        with self._table:
            missing = [r.label for r, _ in parts if key_of(r) not in self.host]
            if missing:
                raise NotResident(f"not resident on this node: {', '.join(missing)}")
            if not parts:
                return Hold((), None, 0)
            hold = self._hold_of(tuple(parts))
            for ref, _ in parts:
                self.host.touch(key_of(ref))
                self._holds[key_of(ref)] += 1
            return hold

    def _hold_of(self, parts: tuple[tuple[RevisionRef, float], ...]) -> Hold:
        keys = [key_of(r) for r, _ in parts]
        if len(parts) == 1 and parts[0][1] == 1.0:
            return Hold(parts, keys[0], self.host.get(keys[0]).weights.rank)
        rank = LoraWeights.stack_rank([self.host.get(k).weights for k in keys])
        if rank > self.max_rank:
            raise InvalidArgument(
                f"the stacked adapters have rank {rank} together; "
                f"this node serves ranks up to {self.max_rank}"
            )
        nbytes = self.slot_bytes[self.layout.fitting(rank)[0]]
        if nbytes > self.table.budget_bytes:
            raise ResourceExhausted(
                f"the stacked adapters (rank {rank}) take {nbytes:,} bytes in a slot, more "
                f"than the node's device slot budget of {self.table.budget_bytes:,}"
            )
        return Hold(parts, stack_key(parts), rank)

    def drop(self, hold: Hold) -> None:
        """The request holding `hold` ended without a lease (or its lease was released)."""
        with self._table:
            for ref, _ in hold.parts:
                self._holds[key_of(ref)] -= 1
                if self._holds[key_of(ref)] <= 0:
                    del self._holds[key_of(ref)]

    def take_slot(self, hold: Hold) -> Lease:
        """A leased slot for `hold`: a resident revision without a device slot is copied
        into one first, a stack is built into one. ResourceExhausted if no class that
        fits has a slot that is free or can be freed (the others are held by running
        batches, or pinned): the hold stays, try again when a lease is released."""
        with self._table:
            if hold.key is None:
                return Lease(0, None, hold)
            if hold.stacked:
                self._stack(hold)
            elif self._promote(hold.key) and self.on_promote is not None:
                self.on_promote()
            return Lease(self.table.acquire(hold.key), hold.key, hold)

    def has_slot(self, hold: Hold) -> bool:
        """Whether `take_slot` would find its slot already filled (it cannot fail then)."""
        with self._table:
            return hold.key is None or hold.key in self.table

    def leased(self) -> bool:
        """Whether some request holds a slot now (a slot will be given back)."""
        with self._table:
            return self.table.leased()

    def release(self, lease: Lease) -> None:
        if lease.key is not None:
            with self._table:
                self.table.release(lease.key)
        if lease.hold is not None:
            self.drop(lease.hold)

    def _promote(self, key: ResidentKey) -> bool:
        """Give host-resident `key` a device slot if it has none (True if it had none):
        the least recently used slots make room, and their revisions stay in host memory."""
        if self.table.slot_of(key) is not None:
            return False
        held = self.host.get(key)
        slot = self._admit(key, held.weights.rank, self.host.pinned(key))
        self._fill(key, slot, held.weights)
        return True

    def _stack(self, hold: Hold) -> None:
        """A slot for the weighted stack, built from the parts' host copies (the parts
        need no slots of their own) once, and cached in the device tier."""
        key = hold.key
        if key is None or key in self.table:
            return
        keys = tuple(key_of(r) for r, _ in hold.parts)
        weights = LoraWeights.stack(
            [(self.host.get(k).weights, w) for k, (_, w) in zip(keys, hold.parts, strict=True)]
        )
        slot = self._admit(key, weights.rank)
        self._fill(key, slot, weights)
        self._stacks[key] = keys

    def _admit(self, key: ResidentKey, rank: int, pinned: bool = False) -> int:
        """A slot of the smallest class that fits `rank` and can make room (a larger
        class if every slot of the smaller ones is pinned or in use)."""
        errors = []
        for index in self.layout.fitting(rank):
            try:
                return self.table.admit(key, self.slot_bytes[index], pinned, index)[0]
            except ResourceExhausted as exc:
                errors.append(exc)
        raise errors[0]

    def _fill(self, key: ResidentKey, slot: int, weights: LoraWeights) -> None:
        """Copy into the slot just admitted for `key`; if that fails, give the slot back."""
        try:
            with self._writes.ordered():
                self.model.load(slot, weights)
        except BaseException:
            self.table.evict(key)
            raise

    def _busy(self, key: ResidentKey) -> bool:
        return self.table.in_use(key) > 0 or key in self._holds

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
            logits = self.model(ids, [slot])
        logprobs = torch.log_softmax(logits[0, len(prompt_ids) - 1 : -1].float(), dim=-1)
        picked = logprobs.gather(1, ids[0, len(prompt_ids) :, None])[:, 0]
        return [float(x) for x in picked.tolist()]  # read back before the lease goes
