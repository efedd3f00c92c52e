"""Serving resident adapters: packed per-layer slots applied with gathered batched
matrix products, so neither a forward pass nor a load grows with the number of resident
adapters. PEFT stays the file format and the correctness reference.

The engine (slots, packed_model, device, engine, kv_batch, scheduler, generation,
sampling, loading, kernels) needs torch (the `serving` extra); the kernels import Triton
on first use on CUDA, and without it the torch path serves. Placement, fleet, catalog,
requests, residency, host_tier, disk_cache, erasures and wire do not: the controller and the router
use them from the slim install."""
