"""Decode passes replayed from CUDA graphs: a pass of the running batch launches every
kernel of every layer one after another from the host, and for a small batch on a GPU
that launching, not the GPU, sets the pace (issue 11 measured a 1.1B base's step some
40 times off reading its weights once). Captured once per padded row count and width, a
pass is one launch.

The batch is padded to the next captured size (as vLLM pads to its captured batch sizes):
the padding rows use slot 0 (zero weights: their delta is nothing) and write and read
column 0 of storage rows no request holds. Every rank class runs over every row, a
row's slot in a class it is not in being 0 (the routing's static shape; the kernels skip
slot 0), and attention covers the longest row's columns rounded up to a power of two,
under each row's own mask: a graph per (rows, columns). The inputs are copied into the
tensors the graph was captured with. New storage (the batch grew, or a new batch) drops
every graph and their memory pool. Capture is thread-local: loads go on copying
adapters into slots from their own threads meanwhile. `capture=False` runs the same
padded pass without a graph: how the CPU tests check it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from .rank_classes import EMPTY_SLOT, SlotLayout
from .routing import ClassRows, SlotRouting
from .static_kv import StaticKvBatch

SIZES = (1, 2, 4, 8, 16, 32, 64, 128, 256)  # row counts captured (as vLLM's, capped)


@dataclass
class _Captured:
    ids: torch.Tensor  # [rows, 1]
    lengths: torch.Tensor  # [rows]
    slots: list[torch.Tensor]  # per rank class, [rows]: each row's slot in that bank
    logits: torch.Tensor | None = None  # the pass's output (the graph rewrites it)
    graph: torch.cuda.CUDAGraph | None = None


class DecodeGraphs:
    def __init__(self, layout: SlotLayout, capture: bool = True) -> None:
        self.layout, self.capture = layout, capture
        self._graphs: dict[tuple[int, int], _Captured] = {}  # by (rows, columns)
        self._storage: int | None = None  # the storage the graphs read
        self._pool: Any = None  # one memory pool for those graphs (as vLLM)

    def forward(self, batch: StaticKvBatch, ids: torch.Tensor) -> torch.Tensor:
        """`batch.forward(ids)` by a padded pass (replayed if captured); the logits
        [rows, vocab] (float32)."""
        rows = batch.rows
        size = next((s for s in SIZES if s >= rows), None)
        if size is None or not rows:
            return batch.forward(ids)
        width = 1 << batch.width.bit_length()  # > the longest row: room for its new token
        batch.reserve(size, width)  # the padding's storage rows exist
        if batch.storage != self._storage:
            self._graphs.clear()
            self._pool = None  # a pool whose graphs are gone cannot take new ones
            self._storage = batch.storage
        step = self._graphs.get((size, width)) or self._prepare(batch, size, width)
        self._fill(step, batch, ids)
        logits = self._run(step, batch, size, width)[:rows].clone()
        batch.advance()
        return logits

    def _prepare(self, batch: StaticKvBatch, size: int, width: int) -> _Captured:
        device = batch.device
        step = _Captured(
            torch.zeros((size, 1), dtype=torch.long, device=device),
            torch.zeros(size, dtype=torch.long, device=device),
            [torch.zeros(size, dtype=torch.long, device=device) for _ in self.layout.classes],
        )
        self._graphs[size, width] = step
        return step

    def _fill(self, step: _Captured, batch: StaticKvBatch, ids: torch.Tensor) -> None:
        rows = batch.rows
        step.ids[:rows].copy_(ids)
        step.ids[rows:].zero_()
        step.lengths[:rows].copy_(batch.lengths)
        step.lengths[rows:].zero_()
        per_class = [[EMPTY_SLOT] * len(step.ids) for _ in self.layout.classes]
        for row, slot in enumerate(batch.slots):
            if slot != EMPTY_SLOT:
                index, local = self.layout.locate(slot)
                per_class[index][row] = local
        for buffer, values in zip(step.slots, per_class, strict=True):
            buffer.copy_(torch.tensor(values, dtype=torch.long))

    def _run(self, step: _Captured, batch: StaticKvBatch, size: int, width: int) -> torch.Tensor:
        routing = SlotRouting(
            size, tuple(ClassRows(c, None, slots) for c, slots in enumerate(step.slots))
        )

        def run() -> torch.Tensor:
            return batch.run_pass(step.ids, step.lengths, routing, width)

        if not self.capture:
            return run()
        if step.graph is None or step.logits is None:
            step.logits, step.graph = self._record(run)
        step.graph.replay()
        return step.logits

    def _record(self, run: Callable[[], torch.Tensor]) -> tuple[torch.Tensor, torch.cuda.CUDAGraph]:
        """Warm up on a side stream (lazy initialisations must not be captured), then
        capture: the warm-up computes this very pass, which the replay writes again."""
        side = torch.cuda.Stream()  # type: ignore[no-untyped-call]
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(2):
                run()
        torch.cuda.current_stream().wait_stream(side)
        if self._pool is None:
            self._pool = torch.cuda.graph_pool_handle()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._pool, capture_error_mode="thread_local"):
            logits = run()
        return logits, graph
