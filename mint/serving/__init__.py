"""Serving resident adapters (torch): packed per-layer slots applied with gathered batched
matrix products, so neither a forward pass nor a load grows with the number of resident
adapters. PEFT stays the file format and the correctness reference."""
